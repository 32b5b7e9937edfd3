"""The one exception tree of vtaudit.

A *finding* (a failed audit check) is data, not an exception. Exceptions are for
inputs that cannot be used at all: a record that cannot be parsed, a trust file that
cannot be read. Library errors (binascii, json, asn1crypto, duckdb) are re-raised as
one of these with ``from e`` so callers catch one type.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "CidMismatchError",
    "ClusterError",
    "CryptoError",
    "EncodingError",
    "InputError",
    "SchemaError",
    "TimestampError",
]


class AuditError(Exception):
    """Base class of every error vtaudit raises on purpose."""


class InputError(AuditError):
    """A file, directory or option given by the user cannot be used."""


class ClusterError(InputError):
    """The Dask cluster given with ``--cluster`` cannot be used: unreachable, without
    workers, running another vtaudit, or it lost work it was given. The audit stops
    without a verdict: no work is ever left out silently."""


class EncodingError(AuditError):
    """Bytes or text that are not valid under spec §2 (b64u, JSON, CID)."""

    def __init__(self, what: str, got: str, expected: str) -> None:
        self.what = what
        self.got = got
        self.expected = expected
        super().__init__(f"{what}: got {got}, expected {expected}")


class SchemaError(EncodingError):
    """A record member that is missing, unknown or of the wrong form (spec §3-§4).

    ``path`` names the member, e.g. ``body.timeline.KA``; ``record`` names the
    record (its CID when known, else its type).
    """

    def __init__(self, path: str, got: str, expected: str, record: str | None = None) -> None:
        self.path = path
        self.record = record
        where = f"{record} {path}" if record else path
        super().__init__(where, got, expected)

    def in_record(self, record: str) -> SchemaError:
        """Return the same error, naming ``record``."""
        return SchemaError(self.path, self.got, self.expected, record)


class CidMismatchError(EncodingError):
    """Bytes served for a CID that do not hash to it (spec §3, check REC-CID)."""

    def __init__(self, claimed: str, actual: str) -> None:
        self.claimed = claimed
        self.actual = actual
        super().__init__(f"bytes served as {claimed}", f"bytes hashing to {actual}", claimed)


class CryptoError(AuditError):
    """A key, point, scalar or ciphertext that cannot be used (spec §5)."""


class TimestampError(CryptoError):
    """An RFC 3161 token that cannot be parsed or does not verify (spec §3)."""
