"""The result cache: per-record results of earlier runs, reused by content (decision D38).

Re-running ``vtaudit verify`` after a harvest added records re-checks only what changed.
Three results are cached, each under a key that covers every input it depends on:

- ``sig``: whether an Ed25519 signature verifies; key: SHA-256 of the public key, the
  signature and the record digest (what a (CID, index) pins in a well-formed store);
- ``token``: an RFC 3161 token's genTime and problems; key: the token, the record digest
  and the *TSA context* (the election's TSA certificates and the trust file's roots);
- ``block``: what the recount drew from one counted block (its problems, valid votes,
  answers rows, voter entries, invalid nonces); key: the block's CID and columns and the
  *recount context* (the combined private key and the effective templates).

Every key also covers the *logic hash*: the vtaudit version, this cache format, the
source of the modules whose code decides the results and the versions of the libraries
they call. Other code never reuses a result.

Trust. The cache lives where anyone could have written it (the audit folder of an
evidence directory received from someone else), so it is never believed unless this
user wrote it:

1. each part file is named ``<kind>-<tag>.parquet`` where ``tag`` is the HMAC-SHA256,
   under this user's secret key (:func:`user_secret`, 32 random bytes in
   ``$XDG_CACHE_HOME/vtaudit/cache.key``, mode 0600), of the kind and the file's bytes;
2. a part is read whole into memory, its tag recomputed and compared in constant time,
   and only then parsed, from those same bytes (no second read);
3. a part that is too large, unreadable, not authenticated, of other columns or from
   another logic hash is ignored: a miss, counted and reported (:attr:`ResultCache.notes`),
   never an error. A cache that cannot be used at all only means every result is computed.

Parts are written whole (in memory, tag, temporary file, fsync, rename, fsync of the
folder), so a killed run leaves whole parts or none. When a kind has more than
``COMPACT_AT`` usable parts, they are merged into one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import platform
import re
import secrets
import stat
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from auditor import __version__
from auditor.errors import AuditError

__all__ = [
    "BLOCK_SCHEMA",
    "CACHE_FORMAT",
    "CacheError",
    "Lookup",
    "ResultCache",
    "TokenResult",
    "logic_hash",
    "open_cache",
    "user_secret",
]

CACHE_FORMAT = "vtaudit-cache/1"
KEY_FILE = "cache.key"
KEY_BYTES = 32
MAX_PART_BYTES = 256 * 1024 * 1024  # a part larger than this is not read (ours stay far below)
COMPACT_AT = 8  # usable parts of one kind before they are merged into one
FLUSH_BLOCKS = 2048  # block rows buffered before a part is written
ROW_GROUPS = {"sig": 262_144, "token": 65_536, "block": 64}
STALE_TMP_SECONDS = 24 * 3600  # temporary files of killed runs older than this are removed

PROBLEM = pa.struct([("check", pa.string()), ("message", pa.string())])
ENTRY = pa.struct([("vote", pa.int32()), ("nonce", pa.string())])
CELL = pa.struct(
    [
        ("at", pa.int32()),  # the vote's position among the block's valid votes
        ("question", pa.string()),
        ("kind", pa.string()),
        ("option", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.int64()),
        ("text", pa.string()),
    ]
)
VOTER = pa.struct([("key", pa.binary()), ("registrant", pa.string())])
SCHEMAS: dict[str, pa.Schema] = {
    "sig": pa.schema([("fp", pa.binary(32)), ("ok", pa.bool_())]),
    "token": pa.schema(
        [
            ("fp", pa.binary(32)),
            ("gen_time", pa.int64()),
            ("token_problems", pa.list_(pa.string())),
            ("imprint_problems", pa.list_(pa.string())),
        ]
    ),
    "block": pa.schema(
        [
            ("fp", pa.binary(32)),
            ("cid", pa.string()),
            ("template", pa.string()),
            ("members", pa.int32()),
            ("counted", pa.bool_()),
            ("problems", pa.list_(PROBLEM)),  # (check id, message), in the order found
            ("votes", pa.list_(ENTRY)),  # the valid votes: index in the block's votes, nonce
            ("cells", pa.list_(CELL)),  # their answers rows (answers.CELL_SCHEMA)
            ("voters", pa.list_(VOTER)),  # voter entries whose signature verifies
            ("nonces", pa.list_(ENTRY)),  # votes that decrypt but are not valid
        ]
    ),
}
BLOCK_SCHEMA = SCHEMAS["block"]
_PART = re.compile(r"(sig|token|block)-([0-9a-f]{64})\.parquet")
_META_LOGIC = b"vtaudit.cache.logic"
# The code that decides cached results: any change to it is another logic hash.
_LOGIC_FILES = (
    "__init__.py",
    "errors.py",
    "limits.py",
    "crypto",
    "model",
    "verify/answers.py",
    "verify/cache.py",
    "verify/context.py",
    "verify/recount.py",
    "verify/reuse.py",
)
_LOGIC_LIBRARIES = ("pynacl", "cryptography", "asn1crypto")
# verify_token turns an exception inside it into a problem that starts so: a bug or a lack
# of memory, not a fact about the token; such a result is not kept.
_UNEXPECTED = "checked token: got an unexpected "

TokenResult = tuple[int | None, tuple[str, ...], tuple[str, ...]]  # genTime, TSA-TOKEN, TSA-IMPRINT
Signed = tuple[bytes, bytes, bytes]  # public key, signature, record digest
KINDS = ("signatures", "tokens", "blocks")  # what the counts are of
Item = TypeVar("Item")
R = TypeVar("R")


class CacheError(AuditError):
    """The cache cannot be used at all (its key is unreadable or readable by others)."""


# ---------------------------------------------------------------------------- keys


def _key_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if base and Path(base).is_absolute():
        return Path(base) / "vtaudit"
    try:
        return Path.home() / ".cache" / "vtaudit"
    except RuntimeError as e:  # no $HOME and no password entry
        raise CacheError(f"no place for the cache key: $XDG_CACHE_HOME is not set and {e}") from e


def user_secret(folder: Path | None = None) -> bytes:
    """This user's cache key: 32 random bytes in ``folder/cache.key`` (default
    ``$XDG_CACHE_HOME/vtaudit``), created with mode 0600 on first use.

    Raises CacheError when it cannot be read or created, is not a regular file of this
    user, is readable or writable by others, or is not 32 bytes long."""
    folder = folder or _key_folder()
    path = folder / KEY_FILE
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.write(fd, secrets.token_bytes(KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            key = os.read(fd, KEY_BYTES + 1)
        finally:
            os.close(fd)
    except OSError as e:
        raise CacheError(f"the cache key {path} cannot be read or created ({e})") from e
    if not stat.S_ISREG(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        raise CacheError(f"the cache key {path} is not a regular file of this user")
    if info.st_mode & 0o077:
        raise CacheError(
            f"the cache key {path} has mode {stat.S_IMODE(info.st_mode):04o}: others could forge cache "
            "parts; expected 0600 (chmod 600 it, or delete it to start a new cache)"
        )
    if len(key) != KEY_BYTES:
        raise CacheError(f"the cache key {path} holds {len(key)} bytes, expected {KEY_BYTES}")
    return key


def logic_hash() -> bytes:
    """SHA-256 of what decides a cached result besides its inputs: the vtaudit version, the
    cache format, the source of the deciding modules, Python's and the libraries' versions."""
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for part in (CACHE_FORMAT, __version__, platform.python_version()):
        h.update(_framed(part.encode()))
    for name in _LOGIC_LIBRARIES:
        try:
            h.update(_framed(f"{name} {metadata.version(name)}".encode()))
        except metadata.PackageNotFoundError:
            h.update(_framed(f"{name} -".encode()))
    for relative in _LOGIC_FILES:
        path = package / relative
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        for file in files:
            try:
                h.update(_framed(file.relative_to(package).as_posix().encode()) + _framed(file.read_bytes()))
            except OSError as e:
                raise CacheError(f"cannot read {file} to fingerprint the checks' code ({e})") from e
    return h.digest()


def _framed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


# ---------------------------------------------------------------------------- lookups


@dataclass
class _Part:
    path: Path
    file: pq.ParquetFile  # over the authenticated bytes, held in memory


@dataclass
class Lookup(Generic[Item, R]):
    """The cached results of a list of work items: ``known[i]`` is item i's result or None;
    ``todo`` the items to compute, in order (``keys`` their cache keys); ``merge`` puts
    their results in place."""

    known: list[R | None]
    todo: list[Item]
    keys: list[bytes] = field(default_factory=list)

    @classmethod
    def nothing(cls, items: Sequence[Item]) -> Lookup[Item, R]:
        """No cache: every item is to compute."""
        return cls([None] * len(items), list(items))

    @classmethod
    def of(cls, items: Sequence[Item], keys: Sequence[bytes], cached: dict[bytes, R]) -> Lookup[Item, R]:
        known = [cached.get(k) for k in keys]
        missing = [i for i, r in enumerate(known) if r is None]
        return cls(known, [items[i] for i in missing], [keys[i] for i in missing])

    @property
    def reused(self) -> int:
        return len(self.known) - len(self.todo)

    def merge(self, fresh: Sequence[R]) -> list[R]:
        """Every item's result: the cached ones, and ``fresh`` (the results of ``todo``)."""
        if len(fresh) != len(self.todo):
            raise ValueError(f"got {len(fresh)} results for {len(self.todo)} items")
        computed = iter(fresh)
        return [next(computed) if r is None else r for r in self.known]


class ResultCache:
    """The authenticated parts of a cache folder, and the parts this run adds to it."""

    def __init__(self, folder: Path, secret: bytes, logic: bytes) -> None:
        self.folder = folder
        self._secret = secret
        self.logic = logic
        self._meta = {_META_LOGIC: logic.hex().encode()}
        self.reused: Counter[str] = Counter()  # results taken from the cache, by kind
        self.checked: Counter[str] = Counter()  # results computed, by kind
        self.ignored: Counter[str] = Counter()  # parts not used, by reason
        self.notes: list[str] = []  # what went wrong with the cache (never with the audit)
        self._parts: dict[str, list[_Part]] = {kind: [] for kind in SCHEMAS}
        self._sig: dict[bytes, bool] = {}
        self._token: dict[bytes, TokenResult] = {}
        self._block: dict[bytes, tuple[int, int, int]] = {}  # key -> part, row group, row
        self._block_cids: set[str] = set()
        self._groups: dict[tuple[int, int], pa.Table] = {}  # recently decoded row groups
        self._pending: list[pa.Table] = []  # recount results not yet written
        if folder.is_dir():
            self._remove_stale_temporaries()
            for path in sorted(folder.iterdir()):
                self._load(path)

    def parts(self) -> dict[str, int]:
        """How many usable parts of each kind were read."""
        return {kind: len(parts) for kind, parts in self._parts.items()}

    def __repr__(self) -> str:  # never show the key
        return f"ResultCache({str(self.folder)!r})"

    # ------------------------------------------------------------------ reading parts

    def _ignore(self, reason: str) -> None:
        self.ignored[reason] += 1

    def _tag(self, kind: str, data: bytes) -> str:
        label = _framed(f"{CACHE_FORMAT}/{kind}".encode())
        return hmac.new(self._secret, label + data, "sha256").hexdigest()

    def _load(self, path: Path) -> None:
        if path.name.startswith(".") or path.suffix != ".parquet":
            return  # not a part: temporary files, anything else kept there
        match = _PART.fullmatch(path.name)
        if match is None:
            self._ignore("not named as a part of this cache")
            return
        kind, tag = match.groups()
        data = self._read(path)
        if data is None:
            return
        if not hmac.compare_digest(self._tag(kind, data), tag):
            self._ignore("not authenticated by this user's cache key (copied from elsewhere, edited or cut)")
            return
        try:
            part = pq.ParquetFile(pa.BufferReader(data))
            schema = part.schema_arrow
            if (schema.metadata or {}).get(_META_LOGIC) != self._meta[_META_LOGIC]:
                self._ignore("written by another version of vtaudit")
                return
            if not schema.remove_metadata().equals(SCHEMAS[kind]):
                self._ignore("of unexpected columns")
                return
            self._index(kind, part)
        except Exception as e:  # authenticated but unreadable: a bug or a disk fault; never fatal
            self._ignore(f"unreadable ({type(e).__name__})")
            return
        self._parts[kind].append(_Part(path, part))

    def _read(self, path: Path) -> bytes | None:
        """A part's bytes; None (and a reason counted) for anything but a regular file of
        at most MAX_PART_BYTES: a link, a FIFO or a device put there must not stall us."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            self._ignore("unreadable, or not a regular file")
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                self._ignore("unreadable, or not a regular file")
                return None
            if info.st_size > MAX_PART_BYTES:
                self._ignore(f"larger than {MAX_PART_BYTES // 2**20} MiB")
                return None
            chunks, size = [], 0
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_PART_BYTES:  # grew while read
                    self._ignore(f"larger than {MAX_PART_BYTES // 2**20} MiB")
                    return None
            return b"".join(chunks)
        except OSError:
            self._ignore("unreadable, or not a regular file")
            return None
        finally:
            os.close(fd)

    def _index(self, kind: str, part: pq.ParquetFile) -> None:
        """Take a part's results (signatures, tokens) or its keys (blocks); nothing is
        taken unless the whole part reads."""
        if kind == "sig":
            table = part.read()
            self._sig.update(zip(table.column("fp").to_pylist(), table.column("ok").to_pylist(), strict=True))
        elif kind == "token":
            table = part.read()
            columns = (c.to_pylist() for c in table.columns)
            self._token.update(
                (fp, (gen_time, tuple(tokens), tuple(imprints)))
                for fp, gen_time, tokens, imprints in zip(*columns, strict=True)
            )
        else:
            number = len(self._parts["block"])
            where: dict[bytes, tuple[int, int, int]] = {}
            cids: set[str] = set()
            for group in range(part.num_row_groups):
                index = part.read_row_group(group, columns=["fp", "cid"])
                for row, fp in enumerate(index.column("fp").to_pylist()):
                    where.setdefault(fp, (number, group, row))
                cids.update(index.column("cid").to_pylist())
            for fp, at in where.items():
                self._block.setdefault(fp, at)
            self._block_cids |= cids

    def _remove_stale_temporaries(self) -> None:
        cutoff = time.time() - STALE_TMP_SECONDS
        for path in self.folder.glob(".*.tmp"):
            try:  # .<kind>-<tag>.parquet.<pid>.<random>.tmp, as _write_part names them
                if _PART.fullmatch(path.name[1:].rsplit(".", 3)[0]) and path.stat().st_mtime < cutoff:
                    path.unlink()
            except OSError:
                continue

    # ------------------------------------------------------------------ signatures and tokens

    def signatures(self, items: Sequence[Signed]) -> Lookup[Signed, bool]:
        """The cached outcome of each (key, signature, digest)."""
        prefix = _framed(self.logic) + _framed(b"sig")
        keys = [hashlib.sha256(prefix + _framed(k) + _framed(s) + _framed(d)).digest() for k, s, d in items]
        lookup: Lookup[Signed, bool] = Lookup.of(items, keys, self._sig)
        self.reused["signatures"] += lookup.reused
        self.checked["signatures"] += len(lookup.todo)
        return lookup

    def keep_signatures(self, lookup: Lookup[Signed, bool], results: Sequence[bool]) -> None:
        """Add the outcomes of ``lookup.todo``."""
        if lookup.keys:
            self._write("sig", pa.table({"fp": lookup.keys, "ok": list(results)}, schema=SCHEMAS["sig"]))

    @staticmethod
    def token_context(certificates: Sequence[bytes], roots: Sequence[bytes]) -> bytes:
        """What a token's verdict depends on besides its bytes and digest: the election's
        TSA certificates and the trust file's roots, in order."""
        h = hashlib.sha256(_framed(b"tsa-context"))
        for group in (certificates, roots):
            h.update(len(group).to_bytes(8, "big"))
            for der in group:
                h.update(_framed(der))
        return h.digest()

    def tokens(
        self, context: bytes, items: Sequence[tuple[bytes, bytes]]
    ) -> Lookup[tuple[bytes, bytes], TokenResult]:
        """The cached outcome of each (token, digest) under the TSA ``context``."""
        prefix = _framed(self.logic) + _framed(b"token") + _framed(context)
        keys = [hashlib.sha256(prefix + _framed(t) + _framed(d)).digest() for t, d in items]
        lookup: Lookup[tuple[bytes, bytes], TokenResult] = Lookup.of(items, keys, self._token)
        self.reused["tokens"] += lookup.reused
        self.checked["tokens"] += len(lookup.todo)
        return lookup

    def keep_tokens(
        self, lookup: Lookup[tuple[bytes, bytes], TokenResult], results: Sequence[TokenResult]
    ) -> None:
        """Add the outcomes of ``lookup.todo``, except those of an exception inside the check."""
        rows = [
            (key, *result)
            for key, result in zip(lookup.keys, results, strict=True)
            if not any(p.startswith(_UNEXPECTED) for p in result[1])
        ]
        if rows:
            columns = [list(c) for c in zip(*rows, strict=True)]
            self._write("token", pa.table(columns, schema=SCHEMAS["token"]))

    # ------------------------------------------------------------------ recounted blocks

    @staticmethod
    def recount_context(private_key: bytes, templates: dict[str, bytes]) -> bytes:
        """What a block's recount depends on besides its own columns: the combined private
        key and every effective template's canonical JSON, by CID."""
        h = hashlib.sha256(_framed(b"recount-context") + _framed(private_key))
        for cid in sorted(templates):
            h.update(_framed(cid.encode()) + _framed(templates[cid]))
        return h.digest()

    def block_key(
        self,
        context: bytes,
        cid: str,
        template: str,
        members: Sequence[bytes],
        votes: Sequence[bytes],
        voters: Sequence[bytes],
    ) -> bytes:
        """The key of one block's recount: the context, the block's CID and its columns."""
        h = hashlib.sha256(_framed(self.logic) + _framed(b"block") + _framed(context))
        h.update(_framed(cid.encode()) + _framed(template.encode()))
        for values in (members, votes, voters):
            h.update(len(values).to_bytes(8, "big"))
            for value in values:
                h.update(_framed(value))
        return h.digest()

    def may_have_block(self, cid: str) -> bool:
        """Whether some cached result is of a block with this CID (to plan the work only)."""
        return cid in self._block_cids

    def blocks(self, keys: Sequence[bytes]) -> tuple[list[bool], pa.Table]:
        """Which ``keys`` are cached, and their rows (BLOCK_SCHEMA) in the order of those
        found. Rows that fail to decode now make every key of the call a miss, with a note."""
        where = [self._block.get(k) for k in keys]
        try:
            pieces: list[pa.Table] = []
            rows: list[int] = []
            current: tuple[int, int] | None = None
            for at in where:
                if at is None:
                    continue
                if current is not None and (at[0], at[1]) != current:
                    pieces.append(self._group(current).take(rows))
                    rows = []
                current = (at[0], at[1])
                rows.append(at[2])
            if current is not None:
                pieces.append(self._group(current).take(rows))
            found = pa.concat_tables(pieces) if pieces else BLOCK_SCHEMA.empty_table()
        except Exception as e:  # authenticated bytes that do not decode: a bug; never fatal
            self.notes.append(f"cached recount results could not be read ({type(e).__name__}: {e})")
            return [False] * len(keys), BLOCK_SCHEMA.empty_table()
        return [at is not None for at in where], found

    def _group(self, at: tuple[int, int]) -> pa.Table:
        table = self._groups.get(at)
        if table is None:
            if len(self._groups) >= 8:  # parts are read in CID order: a few groups suffice
                self._groups.pop(next(iter(self._groups)))
            table = self._parts["block"][at[0]].file.read_row_group(at[1]).cast(BLOCK_SCHEMA)
            self._groups[at] = table
        return table

    def count_blocks(self, reused: int, decrypted: int) -> None:
        self.reused["blocks"] += reused
        self.checked["blocks"] += decrypted

    def keep_blocks(self, rows: pa.Table) -> None:
        """Buffer recount results (BLOCK_SCHEMA rows); a part is written every FLUSH_BLOCKS."""
        if rows.num_rows:
            self._pending.append(rows.cast(BLOCK_SCHEMA))
            if sum(t.num_rows for t in self._pending) >= FLUSH_BLOCKS:
                self.flush()

    def flush(self) -> None:
        """Write the buffered recount results."""
        if self._pending:
            table, self._pending = pa.concat_tables(self._pending), []
            self._write("block", table)

    # ------------------------------------------------------------------ writing parts

    def _write(self, kind: str, table: pa.Table) -> None:
        """Add a part; a failure to write (a full disk, a read-only folder) is a note."""
        try:
            written = self._write_part(kind, [table])
        except OSError as e:
            self.notes.append(f"could not write to the cache folder {self.folder} ({e})")
            return
        if written is not None:  # merged with the others by finish()
            self._parts[kind].append(_Part(*written))

    def _write_part(
        self, kind: str, tables: Iterable[pa.Table], *, unique: bool = False
    ) -> tuple[Path, pq.ParquetFile] | None:
        """Write ``tables`` as one part (``unique``: the first row of each key only); the
        file appears under its name whole or not at all."""
        sink = pa.BufferOutputStream()
        schema = SCHEMAS[kind].with_metadata(self._meta)
        seen: set[bytes] = set()
        rows = 0
        with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
            for table in tables:
                if unique:
                    keep = []
                    for fp in table.column("fp").to_pylist():
                        keep.append(fp not in seen)
                        seen.add(fp)
                    table = table.filter(pa.array(keep, pa.bool_()))
                if table.num_rows:
                    writer.write_table(table.cast(schema), row_group_size=ROW_GROUPS[kind])
                    rows += table.num_rows
        if not rows:
            return None
        data = sink.getvalue().to_pybytes()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{kind}-{self._tag(kind, data)}.parquet"
        tmp = self.folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path, pq.ParquetFile(pa.BufferReader(data))

    def finish(self) -> None:
        """The end of a run: write what is buffered; merge a kind's parts into one when
        there are COMPACT_AT or more (those this run read or wrote; then removed)."""
        self.flush()
        for kind, parts in self._parts.items():
            if len(parts) < COMPACT_AT:
                continue
            try:
                groups = (p.file.read_row_group(g) for p in parts for g in range(p.file.num_row_groups))
                merged = self._write_part(kind, groups, unique=True)
                for part in parts:
                    if merged is None or part.path != merged[0]:
                        part.path.unlink(missing_ok=True)
            except Exception as e:  # housekeeping only: the parts stay as they were
                self.notes.append(
                    f"could not merge the {kind} parts in {self.folder} ({type(e).__name__}: {e})"
                )

    # ------------------------------------------------------------------ reporting

    def summary(self) -> dict[str, Any]:
        """What was reused and computed, and which parts were ignored and why: for the
        status output and --json, never for the report body."""
        return {
            "folder": str(self.folder),
            "reused": {k: self.reused[k] for k in KINDS},
            "checked": {k: self.checked[k] for k in KINDS},
            "ignoredParts": dict(sorted(self.ignored.items())),
            "notes": list(self.notes),
        }


def open_cache(folder: Path, *, key_folder: Path | None = None) -> tuple[ResultCache | None, str]:
    """The cache in ``folder``, or None and why it cannot be used (never raises)."""
    try:
        return ResultCache(folder, user_secret(key_folder), logic_hash()), ""
    except CacheError as e:
        return None, str(e)
    except OSError as e:  # the folder itself cannot be listed
        return None, f"the cache folder {folder} cannot be read ({e})"
