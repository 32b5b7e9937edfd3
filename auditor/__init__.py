"""vtaudit: an independent auditor for VoteTorrent elections.

The public surface is small: the evidence model (:mod:`auditor.model`), the
cryptography (:mod:`auditor.crypto`), the simulator (:mod:`auditor.sim`) and the
``vtaudit`` command line (:mod:`auditor.cli`).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
