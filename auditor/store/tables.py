"""Typed columns for each record type of the evidence store (docs/evidence-store.md).

Each record becomes one row of its type's table. Conventions:

- CIDs are text (``bagaaiera…``), so that a person can paste one into a query;
- keys, digests, signatures, ciphertexts and scalars are binary (decoded b64u);
- times are ``timestamp[ms, UTC]``; counts are ``int64``;
- nested objects that are read as a whole (questions, histograms, timelines, runoff
  rules, administrators, TSA certificates) are kept as their canonical JSON text.

Every table starts with ``cid``; ``signatures`` and ``timestamps`` hang off ``cid``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
import pyarrow as pa

from auditor.model.encoding import b64u_decode
from auditor.model.envelope import Envelope
from auditor.model.schema import Struct

__all__ = ["TABLES", "Column", "json_text", "row_of", "schema_of"]

TS = pa.timestamp("ms", tz="UTC")
CID = pa.string()
BIN = pa.binary()
JSON = pa.string()  # canonical JSON text


def _b(text: str) -> bytes:
    return b64u_decode(text)


def _bs(texts: Any) -> list[bytes]:
    return [b64u_decode(t) for t in texts]


def json_text(value: Any) -> str:
    """Canonical JSON text of a validated value. The body passed the schema, so it holds
    only strings, safe integers, booleans, null, arrays and objects with ASCII names:
    for those, orjson's sorted compact output is the JCS form (tests/test_bulk.py
    compares the two for every character)."""
    if isinstance(value, Struct):
        value = value.to_json()
    elif isinstance(value, tuple):
        value = [v.to_json() if isinstance(v, Struct) else v for v in value]
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode("utf-8")


class Column(NamedTuple):
    name: str
    dtype: pa.DataType
    extract: Callable[[Any], Any]  # from the body struct
    member: str | None = None  # the body member it is read from, None if computed from several
    convert: str = ""  # how: "" as is, "b" b64u decoded, "bs" each decoded, "j" JSON text, "list"


def _cols(*cols: Column) -> list[Column]:
    return list(cols)


_CONVERTERS: dict[Callable[[Any], Any] | None, str] = {
    None: "",
    _b: "b",
    _bs: "bs",
    json_text: "j",
    list: "list",
}


def _col(name: str, dtype: pa.DataType, convert: Callable[[Any], Any] | None = None) -> Column:
    if convert is None:
        return Column(name, dtype, lambda body: getattr(body, name), name, "")
    return Column(name, dtype, lambda body: convert(getattr(body, name)), name, _CONVERTERS[convert])


# (column, type, extractor from the body) per record type, after the common `cid`.
TABLES: dict[str, list[Column]] = {
    "administration": _cols(
        _col("authority", CID),
        _col("name", pa.string()),
        _col("domain", pa.string()),
        _col("administrators", JSON, json_text),
        Column("admin_keys", pa.list_(BIN), lambda b: [_b(a.key) for a in b.administrators]),
        _col("threshold", pa.int64()),
        _col("expires", TS),
        _col("previous", CID),
    ),
    "election": _cols(
        _col("authority", CID),
        _col("administration", CID),
        _col("title", pa.string()),
        _col("date", TS),
        _col("revisionDeadline", TS),
        _col("registrationAuthority", CID),
        _col("certificationAuthority", CID),
        _col("timestampAuthorities", JSON, json_text),
    ),
    "keyholder": _cols(
        _col("election", CID),
        _col("name", pa.string()),
        _col("title", pa.string()),
        _col("registrantKey", BIN, _b),
        _col("electionKey", BIN, _b),
    ),
    "election_revision": _cols(
        _col("election", CID),
        _col("administration", CID),
        _col("revision", pa.int64()),
        _col("tags", pa.list_(pa.string()), list),
        _col("instructions", pa.string()),
        _col("keyholders", pa.list_(CID), list),
        _col("electionKey", BIN, _b),
        _col("receiptKey", BIN, _b),
        _col("timeline", JSON, json_text),
        _col("runoff", JSON, json_text),
    ),
    "ballot_template": _cols(
        _col("election", CID),
        _col("authority", CID),
        _col("administration", CID),
        _col("district", pa.string()),
        _col("revision", pa.int64()),
        _col("questions", JSON, json_text),
    ),
    "registrant": _cols(
        _col("registrationAuthority", CID),
        _col("key", BIN, _b),
        _col("district", pa.string()),
        _col("publicDetails", BIN, _b),
        _col("privateDetails", BIN, _b),
        _col("registered", TS),
    ),
    "registration_roll": _cols(
        _col("election", CID),
        _col("registrationAuthority", CID),
        _col("administration", CID),
        _col("count", pa.int64()),
        _col("root", BIN, _b),
        _col("districts", JSON, json_text),
    ),
    "vote_block": _cols(
        _col("election", CID),
        _col("template", CID),
        _col("members", pa.list_(BIN), _bs),
        _col("votes", pa.list_(BIN), _bs),
        _col("voters", pa.list_(BIN), _bs),
    ),
    "receipt": _cols(
        _col("election", CID),
        _col("block", CID),
        _col("result", pa.string()),
        _col("registrants", pa.list_(BIN), _bs),
        _col("received", TS),
    ),
    "block_tree": _cols(
        _col("election", CID),
        _col("template", CID),
        _col("administration", CID),
        _col("count", pa.int64()),
        _col("root", BIN, _b),
    ),
    "key_release": _cols(_col("election", CID), _col("keyholder", CID), _col("privateKey", BIN, _b)),
    "key_disclosure": _cols(
        _col("election", CID),
        _col("keyholder", CID),
        _col("privateKey", BIN, _b),
        _col("discoverer", BIN, _b),
    ),
    "tally_node": _cols(
        _col("election", CID),
        _col("template", CID),
        _col("start", pa.int64()),
        _col("end", pa.int64()),
        _col("hash", BIN, _b),
        _col("voters", pa.int64()),
        _col("counts", JSON, json_text),
        _col("children", pa.list_(CID), list),
    ),
    "result": _cols(
        _col("election", CID),
        _col("template", CID),
        _col("administration", CID),
        _col("blockTree", CID),
        _col("tallyRoot", CID),
        _col("voters", pa.int64()),
        _col("counts", JSON, json_text),
    ),
    "accessibility_report": _cols(
        _col("election", CID),
        _col("template", CID),
        _col("registrant", CID),
        _col("key", BIN, _b),
        _col("kind", pa.string()),
        _col("at", TS),
        _col("detail", pa.string()),
    ),
    "dispute": _cols(
        _col("election", CID),
        _col("template", CID),
        _col("receipt", CID),
        _col("key", BIN, _b),
        _col("claim", pa.string()),
    ),
    "certification": _cols(
        _col("election", CID),
        _col("template", CID),
        _col("authority", CID),
        _col("administration", CID),
        _col("result", CID),
        _col("verdict", pa.string()),
        _col("reason", pa.string()),
    ),
}


def schema_of(record_type: str) -> pa.Schema:
    return pa.schema([("cid", CID)] + [(c.name, c.dtype) for c in TABLES[record_type]])


def row_of(envelope: Envelope) -> dict[str, Any]:
    """The typed row of ``envelope`` in its type's table."""
    row: dict[str, Any] = {"cid": envelope.cid}
    for column in TABLES[envelope.type]:
        row[column.name] = column.extract(envelope.body)
    return row


def arrow_batches(relation: Any, rows: int) -> pa.RecordBatchReader:
    """A DuckDB relation's rows as a stream of Arrow record batches of ``rows`` rows (the
    method's name changed in DuckDB 2.0)."""
    method = getattr(relation, "to_arrow_reader", None) or relation.fetch_record_batch
    reader: pa.RecordBatchReader = method(rows)
    return reader
