"""Tests of auditor.store.car (CARv1, spec §7.2).

Good and broken archives side by side: a real CARv1 from the IPLD specification, its
round trip through the writer, then each kind of damage the reader must report (as a
:class:`CarDefect`, or for the header as a :class:`CarError`), and hypothesis runs
that throw random bytes, truncations and flips at it.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterator, Sequence

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.errors import EncodingError
from auditor.model.encoding import CID_PREFIX, cid_binary
from auditor.store import car
from auditor.store.car import (
    DEFECT_RAW_LIMIT,
    CarBlock,
    CarDefect,
    CarError,
    CarHeader,
    CarWriter,
    cid_length,
    decode_uvarint,
    encode_uvarint,
    iter_sections,
    read_car,
    read_header,
    write_car,
)

# ---------------------------------------------------------------------------- fixture
# carv1-basic.car, the CARv1 test fixture of the IPLD specification:
#   github.com/ipld/ipld, specs/transport/car/fixture/carv1-basic/carv1-basic.car
#   (commit 7a0a6e8f, 715 bytes, sha256 543ff9c4…3c2e), described by carv1-basic.json
#   beside it, from which FIXTURE_LAYOUT is transcribed. Written by go-car; it mixes
#   CIDv1 (dag-cbor, raw) and CIDv0 (dag-pb) sections.
FIXTURE = bytes.fromhex(
    "63a265726f6f747382d82a58250001711220f88bc853804cf294fe417e4fa83028689fcdb1b1592c5102e147"
    "4dbc200fab8bd82a5825000171122069ea0740f9807a28f4d932c62e7c1c83be055e55072c90266ab3e79df6"
    "3a365b6776657273696f6e015b01711220f88bc853804cf294fe417e4fa83028689fcdb1b1592c5102e1474d"
    "bc200fab8ba2646c696e6bd82a582300122002acecc5de2438ea4126a3010ecb1f8a599c8eff22fff1a1dcff"
    "e999b27fd3de646e616d6564626c69708301122002acecc5de2438ea4126a3010ecb1f8a599c8eff22fff1a1"
    "dcffe999b27fd3de122e0a2401551220b6fbd675f98e2abd22d4ed29fdc83150fedc48597e92dd1a7a24381d"
    "44a274511204626561721804122f0a22122079a982de3c9907953d4d323cee1d0fb1ed8f45f8ef02870c0cb9"
    "e09246bd530a12067365636f6e641895012801551220b6fbd675f98e2abd22d4ed29fdc83150fedc48597e92"
    "dd1a7a24381d44a27451636363638001122079a982de3c9907953d4d323cee1d0fb1ed8f45f8ef02870c0cb9"
    "e09246bd530a122d0a240155122081cc5b17018674b401b42f35ba07bb79e211239c23bffe658da1577e3e64"
    "68771203646f671804122d0a221220e7dc486e97e6ebe5cdabab3e392bdad128b6e09acc94bb4e2aa2af7b98"
    "6d24d0120566697273741833280155122081cc5b17018674b401b42f35ba07bb79e211239c23bffe658da157"
    "7e3e64687762626262511220e7dc486e97e6ebe5cdabab3e392bdad128b6e09acc94bb4e2aa2af7b986d24d0"
    "122d0a240155122061be55a8e2f6b4e172338bddf184d6dbee29c98853e0a0485ecee7f27b9af0b412036361"
    "741804280155122061be55a8e2f6b4e172338bddf184d6dbee29c98853e0a0485ecee7f27b9af0b461616161"
    "360171122069ea0740f9807a28f4d932c62e7c1c83be055e55072c90266ab3e79df63a365ba2646c696e6bf6"
    "646e616d65656c696d626f"
)
FIXTURE_SHA256 = "543ff9c45bbcb5c439e8f8683115cf97fc5de6bb14175a749055304427c33c2e"
FIXTURE_ROOTS = [
    "bafyreihyrpefhacm6kkp4ql6j6udakdit7g3dmkzfriqfykhjw6cad5lrm",
    "bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm",
]
# (section offset, section length, block offset, block length, CID) per carv1-basic.json
FIXTURE_LAYOUT = [
    (100, 92, 137, 55, "bafyreihyrpefhacm6kkp4ql6j6udakdit7g3dmkzfriqfykhjw6cad5lrm"),
    (192, 133, 228, 97, "QmNX6Tffavsya4xgBi2VJQnSuqy9GsxongxZZ9uZBqp16d"),
    (325, 41, 362, 4, "bafkreifw7plhl6mofk6sfvhnfh64qmkq73oeqwl6sloru6rehaoujituke"),
    (366, 130, 402, 94, "QmWXZxVQ9yZfhQxLD35eDR8LiMRsYtHxYqTFCBbJoiJVys"),
    (496, 41, 533, 4, "bafkreiebzrnroamgos2adnbpgw5apo3z4iishhbdx77gldnbk57d4zdio4"),
    (537, 82, 572, 47, "QmdwjhxpxzcMsR3qUuj7vUL8pbA7MgR3GAxWi2GLHjsKCT"),
    (619, 41, 656, 4, "bafkreidbxzk2ryxwwtqxem4l3xyyjvw35yu4tcct4cqeqxwo47zhxgxqwq"),
    (660, 55, 697, 18, "bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm"),
]
# The 11-byte pragma a CARv2 starts with: a CARv1-style header {"version": 2}.
CARV2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _cid_text_to_binary(text: str) -> bytes:
    """Binary CID of a base32 ``b…`` CIDv1 or a base58btc ``Qm…`` CIDv0 (test helper)."""
    if text.startswith("b"):
        body = text[1:].upper()
        return base64.b32decode(body + "=" * (-len(body) % 8))
    number = 0
    for char in text:
        number = number * 58 + _B58.index(char)
    return number.to_bytes((number.bit_length() + 7) // 8, "big")


# ---------------------------------------------------------------------------- helpers


class _Trickle(io.RawIOBase):
    """A stream that returns at most ``step`` bytes per read and cannot tell()."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = data
        self._pos = 0
        self._step = step

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        size = len(self._data) if size is None or size < 0 else size
        n = min(size, self._step)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def tell(self) -> int:
        raise io.UnsupportedOperation("no tell")


def _car(blocks: Sequence[tuple[bytes, bytes]], roots: Sequence[bytes] | None = None) -> bytes:
    out = io.BytesIO()
    write_car(out, roots if roots is not None else [blocks[0][0]], blocks)
    return out.getvalue()


def _blocks(n: int, size: int = 50) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        data = (b'{"n":%d}' % i).ljust(size, b" ")
        out.append((cid_binary(data), data))
    return out


def _read_all(data: bytes, **kwargs: int) -> tuple[CarHeader, list[CarBlock | CarDefect]]:
    header, sections = read_car(io.BytesIO(data), **kwargs)
    return header, _drain(sections, len(data))


def _drain(sections: Iterator[CarBlock | CarDefect], size: int) -> list[CarBlock | CarDefect]:
    items = []
    for item in sections:
        items.append(item)
        assert len(items) <= size + 1, "the reader does not advance"
    return items


def _check_tiling(data: bytes, header: CarHeader, items: list[CarBlock | CarDefect]) -> None:
    """Every byte after the header is in exactly one item, in order; a fatal defect is last."""
    at = header.header_end_offset
    for k, item in enumerate(items):
        assert item.offset == at, (k, item)
        if isinstance(item, CarBlock):
            n = len(item.cid) + len(item.data)
            assert data[at : item.end] == encode_uvarint(n) + item.cid + item.data
            at = item.end
        else:
            assert len(item.raw) <= DEFECT_RAW_LIMIT
            assert data[at : at + len(item.raw)] == item.raw
            if item.fatal:
                assert k == len(items) - 1
                return
            assert item.end is not None and item.end > at
            at = item.end
    assert at == len(data)


# ---------------------------------------------------------------------------- the fixture


def test_fixture_is_the_published_file() -> None:
    assert len(FIXTURE) == 715
    assert hashlib.sha256(FIXTURE).hexdigest() == FIXTURE_SHA256


def test_read_fixture() -> None:
    header, items = _read_all(FIXTURE)
    assert header.roots == tuple(_cid_text_to_binary(t) for t in FIXTURE_ROOTS)
    assert header.header_end_offset == 100
    assert all(isinstance(item, CarBlock) for item in items)
    assert len(items) == len(FIXTURE_LAYOUT)
    for item, (offset, length, block_offset, block_length, cid_text) in zip(
        items, FIXTURE_LAYOUT, strict=True
    ):
        assert isinstance(item, CarBlock)
        cid = _cid_text_to_binary(cid_text)
        assert item.offset == offset
        assert item.end == offset + length
        assert item.cid == cid
        assert block_offset == item.end - len(item.data)
        assert len(item.data) == block_length
        # All of these CIDs use sha2-256: the data hashes to the last 32 bytes.
        assert cid[-34:-32] == b"\x12\x20"
        assert hashlib.sha256(item.data).digest() == cid[-32:]
    assert sum(len(item.cid) == 34 for item in items if isinstance(item, CarBlock)) == 3
    _check_tiling(FIXTURE, header, items)


def test_writer_reproduces_fixture() -> None:
    header, items = _read_all(FIXTURE)
    blocks = [(item.cid, item.data) for item in items if isinstance(item, CarBlock)]
    out = io.BytesIO()
    writer = write_car(out, header.roots, blocks)
    assert out.getvalue() == FIXTURE  # same header bytes as go-car: canonical DAG-CBOR
    assert writer.count == 8
    assert writer.bytes_written == len(FIXTURE)


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 1000])
def test_read_fixture_in_small_reads(step: int) -> None:
    stream = _Trickle(FIXTURE, step)
    header = read_header(stream)
    with pytest.raises(ValueError, match="offset="):
        iter_sections(stream)
    items = _drain(iter_sections(stream, offset=header.header_end_offset), len(FIXTURE))
    assert [i.offset for i in items] == [row[0] for row in FIXTURE_LAYOUT]
    _check_tiling(FIXTURE, header, items)


def test_offsets_count_from_the_stream_position() -> None:
    stream = io.BytesIO(b"junk" + FIXTURE)
    stream.seek(4)
    header = read_header(stream)
    assert header.header_end_offset == 104
    items = list(iter_sections(stream))
    assert items[0].offset == 104


# ---------------------------------------------------------------------------- round trips

_cid_v1_spec = st.binary(min_size=32, max_size=32).map(lambda d: CID_PREFIX + d)
_cid_v0 = st.binary(min_size=32, max_size=32).map(lambda d: b"\x12\x20" + d)
_cid_v1_any = st.tuples(
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**63 - 1),
    st.binary(max_size=70),
).map(lambda t: b"\x01" + encode_uvarint(t[0]) + encode_uvarint(t[1]) + encode_uvarint(len(t[2])) + t[2])
_cids = st.one_of(_cid_v1_spec, _cid_v0, _cid_v1_any)
_data = st.one_of(st.binary(max_size=200), st.binary(min_size=120, max_size=20_000))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    roots=st.lists(_cids, min_size=1, max_size=3),
    blocks=st.lists(st.tuples(_cids, _data), max_size=12),
    step=st.sampled_from([None, 1, 5, 333]),
)
def test_round_trip(roots: list[bytes], blocks: list[tuple[bytes, bytes]], step: int | None) -> None:
    out = io.BytesIO()
    writer = write_car(out, roots, blocks)
    data = out.getvalue()
    assert writer.count == len(blocks)
    assert writer.bytes_written == len(data)
    if step is None:
        header, items = _read_all(data)
    else:
        stream = _Trickle(data, step)
        header = read_header(stream)
        items = _drain(iter_sections(stream, offset=header.header_end_offset), len(data))
    assert header.roots == tuple(roots)
    assert [(i.cid, i.data) for i in items if isinstance(i, CarBlock)] == blocks
    assert len(items) == len(blocks)
    _check_tiling(data, header, items)


def test_big_block_over_several_chunks() -> None:
    data = bytes(range(256)) * (3 * 4096 + 1)  # ~3 MiB, several of the reader's chunks
    blocks = [(cid_binary(b"small"), b"small"), (cid_binary(data), data), *_blocks(2)]
    raw = _car(blocks)
    header, items = _read_all(raw)
    assert [(i.cid, i.data) for i in items if isinstance(i, CarBlock)] == blocks
    _check_tiling(raw, header, items)


def test_write_car_to_path(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "out.car"  # type: ignore[operator]
    blocks = _blocks(3)
    writer = write_car(path, [blocks[0][0]], blocks)
    raw = path.read_bytes()
    assert writer.bytes_written == len(raw)
    assert raw == _car(blocks)


def test_writer_takes_bytes_like() -> None:
    cid, data = _blocks(1)[0]
    out = io.BytesIO()
    writer = CarWriter(out, [bytearray(cid)])
    writer.add(memoryview(cid), memoryview(data))  # type: ignore[arg-type]
    writer.add(bytearray(cid), bytearray(data))
    assert out.getvalue() == _car([(cid, data), (cid, data)])


def test_empty_block_and_empty_car() -> None:
    cid = cid_binary(b"")
    raw = _car([(cid, b"")])
    header, items = _read_all(raw)
    assert items == [CarBlock(header.header_end_offset, cid, b"")]
    only_header = _car([(cid, b"")])[: header.header_end_offset]
    assert _read_all(only_header)[1] == []  # zero blocks: allowed, nothing to report


# ---------------------------------------------------------------------------- varints and CIDs


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (1, "01"),
        (127, "7f"),
        (128, "8001"),
        (300, "ac02"),
        (16384, "808001"),
        (2**63 - 1, "ffffffffffffffff7f"),
    ],
)
def test_varints(value: int, encoded: str) -> None:
    assert encode_uvarint(value).hex() == encoded
    assert decode_uvarint(bytes.fromhex(encoded) + b"\xff") == (value, len(encoded) // 2)


@pytest.mark.parametrize("bad", ["80", "8000", "ff00", "808000", "ffffffffffffffffff01", ""])
def test_bad_varints(bad: str) -> None:
    with pytest.raises(CarError):
        decode_uvarint(bytes.fromhex(bad))


@pytest.mark.parametrize("value", [-1, 2**63])
def test_varint_range(value: int) -> None:
    with pytest.raises(ValueError, match="2\\*\\*63"):
        encode_uvarint(value)


def test_cid_length() -> None:
    assert cid_length(cid_binary(b"x") + b"tail") == 37
    assert cid_length(b"\x12\x20" + bytes(32) + b"tail") == 34
    assert cid_length(b"\x01\x55\x00\x03abc!") == 7  # identity multihash of 3 bytes
    for bad in [b"", b"\x02\x55\x12\x20", b"\x12\x20" + bytes(31), b"\x01\x55\x12\x20" + bytes(31)]:
        with pytest.raises(CarError):
            cid_length(bad)


def test_errors_are_encoding_errors() -> None:
    assert issubclass(CarError, EncodingError)
    err = CarError(7, "x", "y")
    assert err.offset == 7 and "byte 7" in str(err)


# ---------------------------------------------------------------------------- header errors


def _with_header(obj: object) -> bytes:
    body = cbor2.dumps(obj)
    return encode_uvarint(len(body)) + body


def _tag(cid: bytes) -> cbor2.CBORTag:
    return cbor2.CBORTag(42, b"\x00" + cid)


GOOD_CID = cid_binary(b"root")

HEADER_ERRORS = [
    ("empty stream", b"", 0, "empty stream"),
    ("truncated varint", b"\x80", 1, "inside varint"),
    ("non-minimal varint", b"\x80\x00", 0, "non-minimal"),
    ("varint over 9 bytes", b"\xff" * 9 + b"\x01", 0, "longer than 9"),
    ("zero length", b"\x00" + FIXTURE, 0, "length of 0"),
    ("huge length", encode_uvarint(2**40) + b"\xa0", 0, "header length"),
    ("short header", b"\x05\xa1", 2, "1 of 5 header bytes"),
    ("JSON, not CAR", b'{"roots":[]}', 12, "header bytes"),
    ("bad CBOR", b"\x01\xff", 1, "undecodable CBOR"),
    ("CBOR then junk", b"\x02\xa0\x00", 2, "after the header"),
    ("not a map", _with_header([1, 2]), 1, "a CBOR list"),
    ("no version", _with_header({"roots": [_tag(GOOD_CID)]}), 1, "without 'version'"),
    ("CARv2", CARV2_PRAGMA + FIXTURE, 1, "CARv2"),
    ("version 0", _with_header({"roots": [_tag(GOOD_CID)], "version": 0}), 1, "version 0"),
    ("version true", _with_header({"roots": [_tag(GOOD_CID)], "version": True}), 1, "True"),
    ("version '1'", _with_header({"roots": [_tag(GOOD_CID)], "version": "1"}), 1, "'1'"),
    ("version 1.0", _with_header({"roots": [_tag(GOOD_CID)], "version": 1.0}), 1, "1.0"),
    ("no roots", _with_header({"version": 1}), 1, "roots None"),
    ("roots a map", _with_header({"roots": {}, "version": 1}), 1, "roots {}"),
    ("root as bytes", _with_header({"roots": [GOOD_CID], "version": 1}), 1, "roots[0]"),
    (
        "root wrong tag",
        _with_header({"roots": [cbor2.CBORTag(43, b"\0" + GOOD_CID)], "version": 1}),
        1,
        "roots[0]",
    ),
    (
        "root no 0x00",
        _with_header({"roots": [cbor2.CBORTag(42, GOOD_CID)], "version": 1}),
        1,
        "roots[0]",
    ),
    (
        "root bad CID",
        _with_header({"roots": [_tag(b"\x02\x00")], "version": 1}),
        1,
        "CID version 2",
    ),
    (
        "root + junk",
        _with_header({"roots": [_tag(GOOD_CID + b"!")], "version": 1}),
        1,
        "1 bytes after",
    ),
    (
        "second root bad",
        _with_header({"roots": [_tag(GOOD_CID), _tag(b"")], "version": 1}),
        1,
        "roots[1]",
    ),
    (
        "odd tag inside",
        _with_header({"roots": [cbor2.CBORTag(2, b"\x01")], "version": 1}),
        1,
        "roots[0]",
    ),
    ("bad semantic tag", b"\x05\xc1\x7b\xff\xff\xff", 1, "undecodable CBOR"),
]


@pytest.mark.parametrize(
    ("data", "offset", "message"),
    [pytest.param(d, o, m, id=name) for name, d, o, m in HEADER_ERRORS],
)
def test_header_errors(data: bytes, offset: int, message: str) -> None:
    with pytest.raises(CarError) as caught:
        read_header(io.BytesIO(data))
    assert caught.value.offset == offset
    assert message in str(caught.value)


def test_header_limit_is_a_parameter() -> None:
    with pytest.raises(CarError, match="at most 50"):
        read_header(io.BytesIO(FIXTURE), max_header_bytes=50)


def test_header_without_roots_is_read() -> None:
    # The IPLD spec leaves "number of roots" unresolved; reading does not insist.
    raw = _with_header({"roots": [], "version": 1})
    assert read_header(io.BytesIO(raw)) == CarHeader((), len(raw))


def test_extra_header_keys_are_ignored() -> None:
    raw = _with_header({"roots": [_tag(GOOD_CID)], "version": 1, "note": "x"})
    assert read_header(io.BytesIO(raw)).roots == (GOOD_CID,)


def test_header_reads_exactly_the_header() -> None:
    stream = io.BytesIO(FIXTURE)
    read_header(stream)
    assert stream.tell() == 100


# ---------------------------------------------------------------------------- writer errors


def test_writer_needs_a_root() -> None:
    with pytest.raises(ValueError, match="at least one root"):
        CarWriter(io.BytesIO(), [])
    with pytest.raises(TypeError):
        CarWriter(io.BytesIO(), GOOD_CID)


@pytest.mark.parametrize("bad", [b"", b"\x02\x00", GOOD_CID[:-1], GOOD_CID + b"x", b"\x12\x20"])
def test_writer_rejects_bad_cids(bad: bytes) -> None:
    with pytest.raises(ValueError):
        CarWriter(io.BytesIO(), [bad])
    writer = CarWriter(io.BytesIO(), [GOOD_CID])
    with pytest.raises(ValueError):
        writer.add(bad, b"data")
    assert writer.count == 0


# ---------------------------------------------------------------------------- section defects


def _header_end(raw: bytes) -> int:
    return read_header(io.BytesIO(raw)).header_end_offset


def test_truncated_last_section() -> None:
    blocks = _blocks(3, size=200)  # 237-byte sections: 2-byte length varints
    raw = _car(blocks)
    header, items = _read_all(raw)
    last = items[-1]
    assert isinstance(last, CarBlock)
    for cut in range(last.offset + 1, len(raw)):
        header, got = _read_all(raw[:cut])
        assert [(i.cid, i.data) for i in got[:2] if isinstance(i, CarBlock)] == blocks[:2]
        assert len(got) == 3
        defect = got[2]
        assert isinstance(defect, CarDefect) and defect.fatal
        assert defect.offset == last.offset
        expected = "truncated varint" if cut == last.offset + 1 else "truncated section"
        assert expected in defect.reason, (cut, defect.reason)
        _check_tiling(raw[:cut], header, got)
    # cut exactly between sections: a clean, shorter CAR
    assert len(_read_all(raw[: last.offset])[1]) == 2


@pytest.mark.parametrize(
    ("length", "reason"),
    [
        ("8000", "non-minimal varint"),
        ("ff00", "non-minimal varint"),
        ("a58000", "non-minimal varint"),
        ("ffffffffffffffffff01", "longer than 9 bytes"),
        ("ffffffffffffffffffff", "longer than 9 bytes"),
    ],
)
def test_bad_section_length_ends_reading(length: str, reason: str) -> None:
    good = _car(_blocks(2))
    raw = good + bytes.fromhex(length) + _car(_blocks(1))[_header_end(good) :]
    header, items = _read_all(raw)
    assert [type(i) for i in items] == [CarBlock, CarBlock, CarDefect]
    defect = items[2]
    assert isinstance(defect, CarDefect)
    assert defect.fatal and defect.offset == len(good) and reason in defect.reason
    _check_tiling(raw, header, items)


def test_oversize_section_ends_reading() -> None:
    blocks = [*_blocks(1, size=50), *_blocks(1, size=500), *_blocks(1, size=50)]
    raw = _car(blocks)
    header, items = _read_all(raw, max_section_bytes=200)
    assert [type(i) for i in items] == [CarBlock, CarDefect]
    assert isinstance(items[1], CarDefect) and "over the limit of 200" in items[1].reason
    assert items[1].fatal
    _check_tiling(raw, header, items)
    # the default limit: 8 MiB + 1 KiB; a claimed 9 MiB section is refused without reading it
    huge = _car(_blocks(1)) + encode_uvarint(9 * 1024 * 1024) + b"\x01\x55"
    _, items = _read_all(huge)
    assert isinstance(items[-1], CarDefect) and "over the limit" in items[-1].reason


@pytest.mark.parametrize(
    ("cid", "reason"),
    [
        (b"\x02\x55\x12\x20" + bytes(32), "CID version 2"),
        (b"\x00\x55\x12\x20" + bytes(32), "CID version 0"),
        (b"\x01\x55\x12\x40" + bytes(32), "64 bytes"),
        (b"\x01\x80\x00\x12\x20" + bytes(32), "non-minimal"),
        (b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "longer than 9"),
        (b"\x12\x20" + bytes(20), "CIDv0 of 22 bytes"),
        (b"\x01\x55", "multihash code: truncated"),
        (b"\xff", "truncated varint"),
    ],
)
def test_garbage_cid_is_a_defect_and_reading_goes_on(cid: bytes, reason: str) -> None:
    good = _car(_blocks(1))
    bad_section = encode_uvarint(len(cid)) + cid
    tail = _car(_blocks(2))[_header_end(good) :]
    raw = good + bad_section + tail
    header, items = _read_all(raw)
    assert [type(i) for i in items] == [CarBlock, CarDefect, CarBlock, CarBlock]
    defect = items[1]
    assert isinstance(defect, CarDefect)
    assert defect.offset == len(good)
    assert defect.end == len(good) + len(bad_section)
    assert not defect.fatal
    assert reason in defect.reason
    assert defect.raw == bad_section[:DEFECT_RAW_LIMIT]
    _check_tiling(raw, header, items)


def test_defect_raw_is_bounded() -> None:
    good = _car(_blocks(1))
    bad_section = encode_uvarint(5000) + b"\x07" + bytes(4999)
    raw = good + bad_section
    _, items = _read_all(raw)
    defect = items[-1]
    assert isinstance(defect, CarDefect)
    assert len(defect.raw) == DEFECT_RAW_LIMIT and defect.end == len(raw)


def test_cid_v0_section() -> None:
    data = b"\x0a\x02\x08\x01"  # a dag-pb node
    cid = b"\x12\x20" + hashlib.sha256(data).digest()
    raw = _car([(cid, data)], roots=[cid])
    header, items = _read_all(raw)
    assert header.roots == (cid,)
    assert items == [CarBlock(header.header_end_offset, cid, data)]


def test_zero_bytes_between_sections() -> None:
    good = _car(_blocks(1))
    tail = _car(_blocks(1))[_header_end(good) :]
    for zeros in (1, 5, 3000):
        for step in (None, 1, 7):
            raw = good + bytes(zeros) + tail
            if step is None:
                header, items = _read_all(raw)
            else:
                stream = _Trickle(raw, step)
                header = read_header(stream)
                items = _drain(iter_sections(stream, offset=header.header_end_offset), len(raw))
            assert [type(i) for i in items] == [CarBlock, CarDefect, CarBlock]
            defect = items[1]
            assert isinstance(defect, CarDefect)
            assert defect.offset == len(good) and defect.end == len(good) + zeros
            assert f"{zeros} zero byte(s)" in defect.reason
            _check_tiling(raw, header, items)
    # trailing padding
    header, items = _read_all(good + bytes(100))
    assert isinstance(items[-1], CarDefect) and items[-1].end == len(good) + 100


# ---------------------------------------------------------------------------- fuzzing


def _fuzz_read(data: bytes) -> None:
    """Read everything; only CarError (from the header) may escape."""
    try:
        header, sections = read_car(io.BytesIO(data))
    except CarError as e:
        assert 0 <= e.offset <= len(data)
        return
    items = _drain(sections, len(data))
    _check_tiling(data, header, items)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    _fuzz_read(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_after_a_good_header(tail: bytes) -> None:
    _fuzz_read(FIXTURE[:100] + tail)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_truncated_and_flipped_fixture(data: st.DataObject) -> None:
    raw = bytearray(FIXTURE)
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(1, 255)), max_size=4))
    for at, mask in flips:
        raw[at] ^= mask
    cut = data.draw(st.integers(0, len(raw)))
    inserts = data.draw(
        st.lists(st.tuples(st.integers(0, cut), st.binary(min_size=1, max_size=8)), max_size=2)
    )
    out = bytes(raw[:cut])
    for at, blob in inserts:
        out = out[:at] + blob + out[at:]
    _fuzz_read(out)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, len(FIXTURE) - 100), st.integers(1, 255), st.sampled_from([1, 3, 50]))
def test_flips_with_small_reads(at: int, mask: int, step: int) -> None:
    raw = bytearray(FIXTURE)
    raw[100 + at - 1] ^= mask
    stream = _Trickle(bytes(raw), step)
    header = read_header(stream)
    items = _drain(iter_sections(stream, offset=header.header_end_offset), len(raw))
    _check_tiling(bytes(raw), header, items)


def test_public_api() -> None:
    for name in car.__all__:
        assert hasattr(car, name), name
