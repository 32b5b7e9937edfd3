"""Spec §2 encodings: b64u, strict JSON, JCS and CIDs, against the shared vectors."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditor.errors import EncodingError
from auditor.model.encoding import (
    CID_BINARY_LEN,
    CID_PREFIX,
    CID_TEXT_LEN,
    MAX_SAFE_INT,
    b64u_decode,
    b64u_encode,
    cid_binary,
    cid_from_binary,
    cid_of,
    cid_to_binary,
    is_cid_text,
    jcs,
    parse_json,
    sha256,
)
from tests.conftest import load_vectors

VECTORS = load_vectors()
CID_VECTORS = VECTORS["cid"]
B64U_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# ---------------------------------------------------------------------------- canonical JSON


def test_canonical_json_vector() -> None:
    vector = VECTORS["canonical_json"]
    expected = vector["jcs_utf8"].encode("utf-8")
    # The input as some other program might format it: indented, ASCII-escaped, unsorted.
    loose = json.dumps(vector["input"], indent=2, ensure_ascii=True).encode("ascii")
    value = parse_json(loose)
    assert value == vector["input"]
    assert jcs(value) == expected
    assert jcs(parse_json(expected)) == expected
    assert sha256(expected).hex() == vector["sha256_hex"]
    assert hashlib.sha256(jcs(value)).hexdigest() == vector["sha256_hex"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, False, None]}, b'{"a":[true,false,null],"b":1}'),
        ({"é": "ü"}, '{"é":"ü"}'.encode()),  # raw UTF-8, not \u escapes
        ("\u001f\u007f", b'"\\u001f\x7f"'),  # controls escaped, DEL not
        ("\U0001f68c", '"\U0001f68c"'.encode()),  # astral plane stays raw
        ({"a": {"c": 1, "b": 2}}, b'{"a":{"b":2,"c":1}}'),  # nested members sorted
        (-MAX_SAFE_INT, b"-9007199254740991"),
        ([], b"[]"),
        ({}, b"{}"),
    ],
)
def test_jcs_table(value: Any, expected: bytes) -> None:
    assert jcs(value) == expected


@pytest.mark.parametrize("value", ["\ud800", {"a": ["\udfff"]}, float("nan"), {1, 2}])
def test_jcs_rejects_values_without_canonical_form(value: Any) -> None:
    with pytest.raises(EncodingError):
        jcs(value)


@pytest.mark.parametrize(
    ("data", "got"),
    [
        (b"1.0", "1.0 (floating point)"),
        (b"1e5", "1e5 (floating point)"),
        (b"1E5", "1E5 (floating point)"),
        (b"-0.0", "-0.0 (floating point)"),
        (b'{"a":[0.5]}', "0.5 (floating point)"),
        (b"NaN", "constant NaN"),
        (b"Infinity", "constant Infinity"),
        (b"[-Infinity]", "constant -Infinity"),
        (b'{"a":1,"a":1}', "duplicate member name 'a'"),
        (b'{"x":{"a":1,"b":2,"a":3}}', "duplicate member name 'a'"),
        ('{"é":1}'.encode(), "non-ASCII member name"),
        (b'{"\\u00e9":1}', "non-ASCII member name"),
        (b"9007199254740992", "outside [-(2^53-1), 2^53-1]"),
        (b"-9007199254740992", "outside [-(2^53-1), 2^53-1]"),
        (b"[18446744073709551616]", "outside [-(2^53-1), 2^53-1]"),
        # Beyond Python's 4300-digit int() limit: still our error, not ValueError.
        (b"1" * 5000, "outside [-(2^53-1), 2^53-1]"),
        (b'"\xff"', "invalid UTF-8 at byte 1"),
        (b'"\xc3"', "invalid UTF-8"),
        (b'"\xed\xa0\x80"', "invalid UTF-8"),  # a UTF-8-encoded surrogate
        (b'"\xc0\xaf"', "invalid UTF-8"),  # overlong encoding of "/"
        (b"[" * 100_000, "nested more than 64 deep"),
        (b'{"a":' * 100_000, "nested more than 64 deep"),
        (b"", "Expecting value"),
        (b"[1,]", "line 1"),
        (b"{} {}", "Extra data"),
        (b"\xef\xbb\xbf{}", "BOM"),
        (b"{'a':1}", "Expecting property name"),
    ],
    ids=lambda v: repr(v)[:30] if isinstance(v, bytes) else None,
)
def test_parse_json_rejects(data: bytes, got: str) -> None:
    with pytest.raises(EncodingError) as info:
        parse_json(data, what="doc")
    error = info.value
    assert got in error.got
    assert error.what == "doc"
    assert str(error).startswith(f"doc: got {error.got}, expected ")


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"9007199254740991", MAX_SAFE_INT),
        (b"-9007199254740991", -MAX_SAFE_INT),
        (b"-0", 0),
        (b' { "a" : { "a" : 1 } , "b" : [ {"a":2} ] } ', {"a": {"a": 1}, "b": [{"a": 2}]}),
        (b'"\\u00e9\\ud83d\\ude8c"', "é\U0001f68c"),  # escaped surrogate pair
        (b'{"":null}', {"": None}),
        (b"[" * 64 + b"]" * 64, json.loads("[" * 64 + "]" * 64)),  # MAX_JSON_DEPTH
    ],
)
def test_parse_json_accepts(data: bytes, value: Any) -> None:
    assert parse_json(data) == value


# ---------------------------------------------------------------------------- b64u


@pytest.mark.parametrize("text", VECTORS["b64u_invalid"])
def test_b64u_invalid_vectors_rejected(text: str) -> None:
    with pytest.raises(EncodingError):
        b64u_decode(text)


@pytest.mark.parametrize(
    "text",
    ["AAE\n", " AAE", "AA E", "AA\tE", "AAE=", "AAE==", "AA/E", "AA+E", "AAÉ", "AB", "AAB", "_x"],
)
def test_b64u_more_invalid(text: str) -> None:
    with pytest.raises(EncodingError) as info:
        b64u_decode(text)
    assert "expected" in str(info.value)


@pytest.mark.parametrize("value", [None, b"AAE", 1, ["AAE"]])
def test_b64u_rejects_non_strings(value: Any) -> None:
    with pytest.raises(EncodingError, match="a base64url string"):
        b64u_decode(value)


def _vector_b64u_strings() -> list[str]:
    """Every b64u value in the vectors (keys, points, scalars, signatures, roots, leaves)."""
    ek, ecies, merkle = VECTORS["election_key"], VECTORS["ecies"], VECTORS["merkle"]
    found = [*ek["private_scalars"], *ek["public_points"], ek["combined_public"]]
    found += [ek["combined_private"], ecies["ephemeral_scalar"], ecies["ciphertext"]]
    found += [VECTORS["voter_entry"]["entry"]["signature"], ecies["entry"]["nonce"]]
    found += [r["root"] for r in merkle["roots"]]
    for proof in merkle["inclusion_size_7"]["proofs"]:
        found += [proof["leaf"], *proof["path"]]
    return found


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"", ""),
        (b"\x00", "AA"),
        (b"\x00\x01", "AAE"),
        (b"\xff\xff\xff", "____"),
        (b"\xfb\xff", "-_8"),
        (b"hello", "aGVsbG8"),
    ],
)
def test_b64u_known_values(raw: bytes, text: str) -> None:
    assert b64u_encode(raw) == text
    assert b64u_decode(text) == raw


@pytest.mark.parametrize("text", _vector_b64u_strings())
def test_b64u_vector_values_round_trip(text: str) -> None:
    assert b64u_encode(b64u_decode(text)) == text


@pytest.mark.parametrize(("length", "ok"), [(31, False), (32, True), (33, False)])
def test_b64u_length(length: int, ok: bool) -> None:
    text = b64u_encode(bytes(range(32)))
    if ok:
        assert b64u_decode(text, length=length) == bytes(range(32))
    else:
        with pytest.raises(EncodingError) as info:
            b64u_decode(text, length=length, what="key")
        assert (info.value.what, info.value.got, info.value.expected) == (
            "key",
            "32 bytes",
            f"{length} bytes",
        )


@given(st.binary(max_size=300))
def test_b64u_round_trip(raw: bytes) -> None:
    text = b64u_encode(raw)
    assert "=" not in text
    assert set(text) <= set(B64U_ALPHABET)
    assert b64u_decode(text) == raw


@given(st.text(alphabet=B64U_ALPHABET + "=+/ \n", max_size=40))
def test_b64u_decode_is_strict(text: str) -> None:
    """Either a text is rejected, or it is exactly the encoding of what it decodes to."""
    try:
        raw = b64u_decode(text)
    except EncodingError:
        return
    assert b64u_encode(raw) == text


# ---------------------------------------------------------------------------- CIDs


def test_cid_lengths_follow_the_vectors_not_the_prose() -> None:
    # spec §2 prose says 36 bytes / 59 characters; its layout 01 80 04 12 20 ‖ sha256
    # and every vector give 37 bytes / 61 characters. The code follows the vectors.
    assert len(CID_PREFIX) + 32 == CID_BINARY_LEN == 37
    assert CID_TEXT_LEN == 61
    for vector in CID_VECTORS:
        assert len(bytes.fromhex(vector["binary_hex"])) == 37
        assert len(vector["cid"]) == 61
    assert all(len(p["leaf"]) == 50 for p in VECTORS["merkle"]["inclusion_size_7"]["proofs"])


@pytest.mark.parametrize("vector", CID_VECTORS, ids=lambda v: repr(v["bytes_utf8"]))
def test_cid_vectors(vector: dict[str, str]) -> None:
    data = vector["bytes_utf8"].encode("utf-8")
    binary = bytes.fromhex(vector["binary_hex"])
    assert cid_of(data) == vector["cid"]
    assert cid_binary(data) == binary
    assert cid_from_binary(binary) == vector["cid"]
    assert cid_to_binary(vector["cid"]) == binary
    assert is_cid_text(vector["cid"])
    assert vector["cid"].startswith("bagaaiera")


GOOD_CID = CID_VECTORS[0]["cid"]  # ends in 'q': base32 value 16, low 4 bits zero
assert GOOD_CID.endswith("q")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", id="raw codec"),
        pytest.param("c" + GOOD_CID[1:], id="multibase c"),
        pytest.param("bagaaierb" + GOOD_CID[9:], id="wrong hash code"),
        pytest.param(GOOD_CID.upper(), id="all uppercase"),
        pytest.param("B" + GOOD_CID[1:], id="uppercase multibase"),
        pytest.param(GOOD_CID[:-1] + "Q", id="uppercase last"),
        pytest.param(GOOD_CID[:-1], id="60 characters"),
        pytest.param(GOOD_CID[:-2], id="59 characters (spec prose)"),
        pytest.param(GOOD_CID + "a", id="62 characters"),
        pytest.param(GOOD_CID + "\n", id="trailing newline"),
        pytest.param(" " + GOOD_CID, id="leading space"),
        pytest.param(GOOD_CID[:-1] + "1", id="not base32 (1)"),
        pytest.param(GOOD_CID[:-1] + "=", id="padding"),
        pytest.param("", id="empty"),
    ],
)
def test_cid_text_rejected(text: str) -> None:
    assert not is_cid_text(text)
    with pytest.raises(EncodingError, match="expected a 61-character CID"):
        cid_to_binary(text)


@pytest.mark.parametrize("last", [c for c in "abcdefghijklmnopqrstuvwxyz234567" if c not in "aq"])
def test_cid_text_non_canonical_trailing_bits(last: str) -> None:
    # 37 bytes are 296 bits; 60 base32 characters carry 300: the last 4 bits must be 0.
    text = GOOD_CID[:-1] + last
    assert not is_cid_text(text)  # the shape is right, but the encoding is not canonical
    with pytest.raises(EncodingError, match="unused trailing bits zero"):
        cid_to_binary(text)


@pytest.mark.parametrize("last", ["a", "q"])
def test_cid_text_canonical_last_characters(last: str) -> None:
    text = GOOD_CID[:-1] + last
    assert cid_from_binary(cid_to_binary(text)) == text


@pytest.mark.parametrize("value", [None, 1, b"bagaaiera", ["x"]])
def test_is_cid_text_non_strings(value: Any) -> None:
    assert not is_cid_text(value)


@pytest.mark.parametrize(
    "binary",
    [
        pytest.param(CID_PREFIX + bytes(31), id="36 bytes (spec prose)"),
        pytest.param(CID_PREFIX + bytes(33), id="38 bytes"),
        pytest.param(bytes([0x01, 0x55, 0x12, 0x20]) + bytes(33), id="raw codec"),
        pytest.param(bytes([0x00]) + CID_PREFIX[1:] + bytes(32), id="CIDv0 byte"),
        pytest.param(b"", id="empty"),
    ],
)
def test_cid_from_binary_rejects(binary: bytes) -> None:
    with pytest.raises(EncodingError):
        cid_from_binary(binary)


@given(st.binary(max_size=200), st.data())
def test_any_changed_byte_changes_the_cid(data: bytes, draw: st.DataObject) -> None:
    original = cid_of(data)
    if data:
        index = draw.draw(st.integers(0, len(data) - 1), label="index")
        delta = draw.draw(st.integers(1, 255), label="xor")
        changed = bytearray(data)
        changed[index] ^= delta
        assert cid_of(bytes(changed)) != original
    assert cid_of(data + b"\x00") != original  # appending a byte changes it too
    assert cid_to_binary(original) == cid_binary(data)
    assert is_cid_text(original)


# ---------------------------------------------------------------------------- JCS property

SAFE_INTS = st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
NO_SURROGATES = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
ASCII_NAMES = st.text(st.characters(min_codepoint=0, max_codepoint=127), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | SAFE_INTS | NO_SURROGATES,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(ASCII_NAMES, children, max_size=5),
    max_leaves=30,
)


@given(JSON_VALUES)
def test_jcs_is_a_fixed_point_of_parse(value: Any) -> None:
    canonical = jcs(value)
    assert jcs(parse_json(canonical)) == canonical
    assert parse_json(canonical) == value
    # Any formatting of the same value has the same canonical bytes.
    loose = json.dumps(value, indent=1, ensure_ascii=True).encode("ascii")
    assert jcs(parse_json(loose)) == canonical
