"""The network side of harvesting (spec §7.1): a node that serves evidence over HTTP,
and a client that harvests from one or more such nodes.

- :mod:`auditor.net.server`: :class:`NodeServer` serves a CAR file or an evidence
  store as a network node (``vtaudit node serve``), with deterministic fault
  injection (:class:`Faults`) for tests and demonstrations.
- :mod:`auditor.net.client`: :class:`HttpNodesSource`, a harvest source (the
  :class:`auditor.harvest.Source` protocol) over the union of several nodes' logs,
  with per-node cursors, timeouts, retries, a per-node concurrency limit and
  provenance naming the node that served each byte.
"""

from auditor.net.client import HttpNodesSource, NetOptions, NetReport, NodeReport
from auditor.net.faults import Faults, parse_faults
from auditor.net.server import NodeContent, NodeServer, load_content

__all__ = [
    "Faults",
    "HttpNodesSource",
    "NetOptions",
    "NetReport",
    "NodeContent",
    "NodeReport",
    "NodeServer",
    "load_content",
    "parse_faults",
]
