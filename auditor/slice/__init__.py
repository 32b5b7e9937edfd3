"""Voter slice proofs (issue 7, docs/slice-proofs.md): a small proof a voter checks offline.

- :mod:`auditor.slice.verify` checks a proof; with :mod:`auditor.slice.core` and
  :mod:`auditor.slice.timestamp` it imports only the standard library and PyNaCl, so
  those three modules (and :mod:`auditor.errors`) can be packaged for a phone or a
  browser;
- :mod:`auditor.slice.prove` builds a proof from an evidence store (it uses the store,
  DuckDB and the rest of vtaudit);
- :mod:`auditor.slice.cli` is ``vtaudit slice prove`` and ``vtaudit slice verify``.

This ``__init__`` imports nothing, so importing the verifier loads nothing else.
"""

__all__: list[str] = []
