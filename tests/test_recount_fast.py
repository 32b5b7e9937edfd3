"""The recount's fast paths against the strict ones they stand in for (D41).

- ``Opener`` (libsodium called directly) against ``ecies.decrypt`` and ``ed25519.verify``:
  the same plaintexts, the same errors with the same words.
- ``accept_vote_entry`` / ``accept_voter_entry`` only ever accept: what they take, the
  strict parser takes as the same value; they take the entries of a real election.
- The byte readers (``read_voter_entry``, ``VoteReader``, D49) only return what the
  accept-only parsers return for the same bytes (``tests.fuzzing.entry_agrees`` checks
  it on every entry below); they take a real election's entries.
- ``valid_vote_check(template)`` is True exactly when ``vote_problems`` is empty.
- ``voter_entry_digest`` writes out the JCS bytes that ``jcs`` makes.
"""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_core_ed25519_add

from auditor.crypto.ecies import ELL, decrypt, derive_scalar, encrypt, is_valid_point, public_of
from auditor.crypto.ed25519 import SigningKey, verify
from auditor.crypto.opener import Opener, SignatureChecker
from auditor.errors import CryptoError
from auditor.model.ballot import valid_vote_check, vote_problems
from auditor.model.encoding import b64u_decode, canonical_value, jcs, sha256
from auditor.model.entries import (
    _MAX_PIECES,
    Answer,
    VoteEntry,
    VoteReader,
    VoterEntry,
    accept_vote_entry,
    accept_voter_entry,
    read_voter_entry,
    voter_entry_digest,
)
from auditor.model.envelope import SIGNING_PREFIX
from auditor.model.records import BallotTemplate
from auditor.verify.answers import AnswerRows, answer_cells
from auditor.verify.context import _verify_packed
from auditor.verify.recount import parse_entry
from tests.fuzzing import Corpus, build_corpus, entry_agrees, mutate, noted_valid
from tests.test_ballot import CID, FULL, INVALID, NONCE, TEMPLATE, VALID

KEY = "A" * 43
SIG = "A" * 86


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("recount-fast"))


# ---------------------------------------------------------------------------- Opener


def _outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", f(*args)
    except CryptoError as e:
        return "error", str(e)


# a point of order 8 (small order) and one of mixed order (prime-order point + torsion)
SMALL = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
MIXED = crypto_core_ed25519_add(public_of((5).to_bytes(32, "little")), SMALL)


def test_opener_agrees_with_decrypt() -> None:
    assert not is_valid_point(SMALL) and not is_valid_point(MIXED)
    rng = random.Random(5)
    private = (7).to_bytes(32, "little")
    election = public_of(private)
    aad = "bagaaieratemplate"
    good = [
        encrypt(rng.randbytes(n), election, aad, (3 + n).to_bytes(32, "little")) for n in (0, 1, 60, 2000)
    ]
    cases = [*good]
    for c in good:
        cases += [
            c[:-1] + bytes([c[-1] ^ 1]),  # tag
            c[:40] + bytes([c[40] ^ 0x80]) + c[41:],  # body
            bytes([c[0] ^ 1]) + c[1:],  # R: another point, or none
            c[:47],  # too short
            c[:48],  # exactly R and a tag
            SMALL + c[32:],
            MIXED + c[32:],
            bytes(32) + c[32:],
            b"\xff" * 32 + c[32:],
        ]
    cases += [b"", bytes(47), rng.randbytes(48), rng.randbytes(100)]
    for key in (private, bytes(32), (ELL + 7).to_bytes(32, "little")):
        opener = Opener(key)
        for c in cases:
            for template in (aad, "another", ""):
                expected = _outcome(decrypt, c, key, template)
                assert _outcome(opener.open, c, template.encode()) == expected
    assert _outcome(Opener(private).open, good[2], aad.encode())[0] == "ok"


def test_opener_verifies_as_verify() -> None:
    key = SigningKey.derive("opener")
    message = b"votetorrent/1:" + bytes(32)
    signature = key.sign(message)
    opener = Opener(bytes(32))
    s = int.from_bytes(signature[32:], "little") + ELL
    cases = [
        (key.public, signature, message),
        (key.public, signature, message + b"x"),
        (key.public, signature[:63] + bytes([signature[63] ^ 1]), message),
        (key.public, signature[:32] + s.to_bytes(32, "little"), message),  # S not reduced
        (SMALL, signature, message),
        (key.public[:31], signature, message),
        (key.public, signature[:63], message),
        (key.public, signature + b"\x00", message),
        (bytes(32), bytes(64), b""),
        (key.public, key.sign(b"x" * 5000), b"x" * 5000),  # longer than the first buffer
    ]
    checker = SignatureChecker()
    for public, sig, msg in cases:
        assert opener.verify(public, sig, msg) == verify(public, sig, msg)
        assert checker.verify(public, sig, msg) == verify(public, sig, msg)
    assert opener.verify(*cases[0]) and opener.verify(*cases[-1])
    # the signature stage's packed batches (32-byte keys, 64-byte signatures, digests)
    digests = [bytes([i]) * 32 for i in range(4)]
    signed = [(key.public, key.sign(SIGNING_PREFIX + d), d) for d in digests]
    signed[1] = (signed[1][0], signed[0][1], signed[1][2])  # another record's signature
    signed[3] = (SMALL, signed[3][1], signed[3][2])  # a small-order key
    packed = tuple(b"".join(row[i] for row in signed) for i in range(3))
    assert (
        _verify_packed(packed)
        == bytes(verify(k, sig, SIGNING_PREFIX + d) for k, sig, d in signed)
        == b"\x01\x00\x01\x00"
    )


def test_threads_sharing_an_opener_each_get_their_own_plaintexts() -> None:
    """A Dask worker started with several threads runs recount batches side by side with
    one Opener per process; cffi lets go of the GIL during each libsodium call, so buffers
    shared by the threads made valid ciphertexts fail to open (or open to another's
    plaintext)."""
    from concurrent.futures import ThreadPoolExecutor

    private = derive_scalar(b"threads")
    public = public_of(private)
    aad = "bagaaiera" + "a" * 52
    key = SigningKey.derive("threads")
    items = []
    for i in range(400):
        plain = b"%d-" % i * (1 + i % 40)  # plaintexts of many lengths
        items.append((plain, encrypt(plain, public, aad, derive_scalar(b"r%d" % i)), key.sign(plain)))
    opener = Opener(private)

    def work(chunk: list[tuple[bytes, bytes, bytes]]) -> list[tuple[bytes, bool]]:
        return [(opener.open(c, aad.encode()), opener.verify(key.public, sig, p)) for p, c, sig in chunk]

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            chunks = [items[i::4] for i in range(4)]
            for chunk, got in zip(chunks, pool.map(work, chunks), strict=True):
                assert got == [(p, True) for p, _, _ in chunk]


# every small-order encoding libsodium lists (canonical ones and y ≥ p), and a few more
_P = 2**255 - 19
_SMALL_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    (_P - 1).to_bytes(32, "little"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    SMALL,
    (1 << 255).to_bytes(32, "little"),
    *((_P + i).to_bytes(32, "little") for i in range(19)),
    *(((_P + i) | (1 << 255)).to_bytes(32, "little") for i in range(19)),
]


def test_the_scalar_multiplication_refuses_exactly_the_invalid_points() -> None:
    """What D46 rests on: crypto_scalarmult_ed25519_noclamp refuses R exactly when
    crypto_core_ed25519_is_valid_point does, so the opener can skip the separate check."""
    from nacl._sodium import ffi, lib

    rng = random.Random(46)
    out = ffi.new("unsigned char[]", 32)
    key = (rng.randrange(1, ELL)).to_bytes(32, "little")
    points = [public_of(rng.randrange(1, ELL).to_bytes(32, "little")) for _ in range(200)]
    mixed = [crypto_core_ed25519_add(p, SMALL) for p in points[:100]]
    candidates = [*points, *mixed, *_SMALL_ORDER, *(rng.randbytes(32) for _ in range(20_000))]
    refused = valid = 0
    for r in candidates:
        multiplies = lib.crypto_scalarmult_ed25519_noclamp(out, key, r) == 0
        assert multiplies == is_valid_point(r), r.hex()
        valid += multiplies
        refused += not multiplies
    # both kinds are well represented: random bytes are a prime-order point 1 time in 16
    assert valid > 1_000 and refused > 15_000


@settings(max_examples=300, deadline=None)
@given(r_point=st.binary(min_size=32, max_size=32), seed=st.integers(0, 2**32))
def test_opener_words_any_r_as_decrypt_does(r_point: bytes, seed: int) -> None:
    rng = random.Random(seed)
    private = rng.randrange(1, ELL).to_bytes(32, "little")
    good = encrypt(b'{"x":1}', public_of(private), "t", rng.randrange(1, ELL).to_bytes(32, "little"))
    for c in (r_point + good[32:], good, *(p + good[32:] for p in _SMALL_ORDER[:6])):
        assert _outcome(Opener(private).open, c, b"t") == _outcome(decrypt, c, private, "t")


# ---------------------------------------------------------------------------- accept-only parsers


def test_the_fast_parsers_take_a_real_elections_entries(corpus: Corpus) -> None:
    assert all(entry_agrees(data, corpus.templates) for data in corpus.entries)


def test_mutated_entries_agree(corpus: Corpus) -> None:
    rng = random.Random(11)
    for _ in range(1500):
        data = rng.choice(corpus.entries)
        for _ in range(rng.randrange(1, 4)):
            data = mutate(rng, data, corpus)
        entry_agrees(data, corpus.templates)


def _vote(**change: Any) -> dict[str, Any]:
    value = {
        "template": CID,
        "nonce": NONCE,
        "answers": [{"question": q, "values": v} for q, v in FULL],
    }
    value.update(change)
    return value


def _answers(values: Any) -> dict[str, Any]:
    return _vote(answers=[{"question": "mayor", "values": values}])


def _voter(**change: Any) -> dict[str, Any]:
    value = {"template": CID, "registrant": CID, "key": KEY, "signature": SIG}
    value.update(change)
    return value


REFUSED_VOTES = {
    "not an object": [],
    "missing member": {"template": CID, "nonce": NONCE},
    "extra member": _vote(extra=1),
    "template not a CID": _vote(template="bagaaiera"),
    "template not canonical": _vote(template=CID[:-1] + "b"),
    "template an integer": _vote(template=1),
    "nonce of 15 bytes": _vote(nonce="A" * 20),
    "nonce of 17 bytes": _vote(nonce="A" * 23),
    "nonce not canonical": _vote(nonce="A" * 21 + "B"),
    "nonce with padding": _vote(nonce="A" * 22 + "=="),
    "nonce an array": _vote(nonce=[NONCE]),
    "answers an object": _vote(answers={}),
    "too many answers": _vote(answers=[{"question": "q", "values": "x"}] * 257),
    "answer not an object": _vote(answers=["mayor"]),
    "answer with an extra member": _vote(answers=[{"question": "mayor", "values": [], "x": 1}]),
    "question not a code": _vote(answers=[{"question": "may or", "values": []}]),
    "question too long": _vote(answers=[{"question": "q" * 65, "values": []}]),
    "question an integer": _vote(answers=[{"question": 1, "values": []}]),
    "option not a code": _answers(["ali ce"]),
    "option an integer": _answers([1]),
    "option a float": _answers([1.5]),
    "option an array": _answers([["alice"]]),
    "option null": _answers([None]),
    "option empty": _answers([""]),
    "too many options": _answers(["a"] * 1025),
    "score a float": _answers({"parks": 1.0}),
    "score a boolean": _answers({"parks": True}),
    "score unsafe": _answers({"parks": 2**53}),
    "score a string": _answers({"parks": "1"}),
    "score name not a code": _answers({"par ks": 1}),
    "too many scores": _answers({f"o{i}": 0 for i in range(1025)}),
    "values a number": _answers(1),
    "values null": _answers(None),
    "values a boolean": _answers(False),
    "text too long": _answers("x" * (2**20 + 1)),
}


@pytest.mark.parametrize("value", REFUSED_VOTES.values(), ids=REFUSED_VOTES.keys())
def test_the_vote_parser_leaves_refusals_to_the_strict_one(value: Any) -> None:
    assert accept_vote_entry(value) is None
    entry_agrees(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), [TEMPLATE])


REFUSED_VOTERS = {
    "not an object": "x",
    "missing member": {"template": CID, "registrant": CID, "key": KEY},
    "extra member": _voter(nonce=NONCE),
    "registrant not a CID": _voter(registrant="b" * 61),
    "template not a CID": _voter(template=None),
    "key of 31 bytes": _voter(key="A" * 42),
    "key of 33 bytes": _voter(key="A" * 44),
    "key not canonical": _voter(key="A" * 42 + "B"),
    "key not b64u": _voter(key="+" * 43),
    "key an integer": _voter(key=0),
    "signature of 63 bytes": _voter(signature="A" * 84),
    "signature not canonical": _voter(signature="A" * 85 + "B"),
    "signature with a newline": _voter(signature=SIG + "\n"),
}


@pytest.mark.parametrize("value", REFUSED_VOTERS.values(), ids=REFUSED_VOTERS.keys())
def test_the_voter_parser_leaves_refusals_to_the_strict_one(value: Any) -> None:
    assert accept_voter_entry(value) is None
    entry_agrees(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), [TEMPLATE])


ACCEPTED = {
    "a full vote": _vote(),
    "no answers": _vote(answers=[]),
    "an invalid vote is still an entry": _answers(["zed", "zed", "alpha"]),
    "a text of every kind of character": _answers('é\u2028\x7f\U0001f68c"\\'),
    "empty selection": _answers([]),
    "negative score": _answers({"parks": -(2**53) + 1}),
    "a voter entry": _voter(),
    "a voter entry with a real-looking key": _voter(key="Ab-_" * 10 + "AbE", signature="z9" * 42 + "zw"),
    "a text holding the byte reader's separator": _answers('x},{"question":"mayor","values":"y'),
    "answers that look like the frame": _vote(answers=[{"question": "nonce", "values": '],"nonce":"'}]),
}


@pytest.mark.parametrize("value", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_the_fast_parsers_accept_well_formed_entries(value: Any) -> None:
    assert entry_agrees(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), [TEMPLATE])


def test_non_canonical_bytes_go_the_strict_way() -> None:
    value = _vote()
    for data in (
        json.dumps(value).encode(),  # spaces, unsorted
        json.dumps(value, sort_keys=True, indent=1).encode(),
        orjson.dumps(value, option=orjson.OPT_SORT_KEYS).replace(b"alice", b"\\u0061lice"),
        orjson.dumps(value, option=orjson.OPT_SORT_KEYS).replace(
            b'"mayor"', b'"mayor","question":"mayor"', 1
        ),
    ):
        entry_agrees(data, [TEMPLATE])


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=12,
    )
)
def test_any_values_in_an_answer_agree(values: Any) -> None:
    try:
        data = orjson.dumps(_answers(values), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return
    entry_agrees(data, [TEMPLATE])


def _sorted(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def test_the_byte_readers_take_a_real_elections_entries(corpus: Corpus) -> None:
    readers: dict[str, VoteReader] = {}
    votes = voters = 0
    for data in corpus.entries:
        value = canonical_value(data)
        if accept_voter_entry(value) is not None:
            assert read_voter_entry(data) is not None
            voters += 1
        vote = accept_vote_entry(value)
        if vote is not None:
            reader = readers.setdefault(vote.template, VoteReader(vote.template))
            assert reader.read(data) == vote
            votes += 1
    assert votes > 40 and voters > 40


def test_the_vote_reader_is_unsure_of_what_it_cannot_tell_from_the_bytes() -> None:
    reader = VoteReader(CID)
    good = _sorted(_vote())
    assert reader.read(good) == accept_vote_entry(_vote())
    other = "bagaaiera" + "q" * 52
    unsure = {
        "another template": _sorted(_vote(template=other)),
        "not canonical": json.dumps(_vote(), sort_keys=True, indent=1).encode(),
        "a nonce of 17 bytes": _sorted(_vote(nonce="A" * 23)),
        "a nonce not canonical": _sorted(_vote(nonce="A" * 21 + "B")),
        "a separator inside a text": _sorted(_answers('x},{"question":"mayor","values":"y')),
        "an answer with an extra member": _sorted(
            _vote(answers=[{"question": "mayor", "values": [], "x": 1}])
        ),
        "a float score": _sorted(_answers({"parks": 1.5})),
        "too many answers": _sorted(_vote(answers=[{"question": "q", "values": "x"}] * 257)),
        "truncated": good[:-1],
        "the frame alone": b'{"answers":[],"nonce":"',
        "empty": b"",
    }
    for label, data in unsure.items():
        assert reader.read(data) is None, label
        assert reader.read(data) is None, f"{label}, read again"
    assert VoteReader(other).read(unsure["another template"]) is not None
    # what it is unsure of, the parser words or accepts: the reader's answer stands apart
    assert parse_entry(unsure["a separator inside a text"], VoteEntry) == VoteEntry.parse(
        _answers('x},{"question":"mayor","values":"y'), "entry"
    )
    assert reader.read(_sorted(_vote(answers=[]))) == VoteEntry(CID, NONCE, ())


def test_the_vote_reader_remembers_answers_up_to_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    reader = VoteReader(CID)
    first = reader.read(_sorted(_answers(["alice"])))
    again = reader.read(
        _sorted(_vote(nonce="B" * 21 + "A", answers=[{"question": "mayor", "values": ["alice"]}]))
    )
    assert first is not None and again is not None
    assert again.answers[0] is first.answers[0]  # checked once, then remembered
    assert reader.read(_sorted(_answers({"parks": 2**53}))) is None
    assert None in reader._pieces.values()  # a refused piece is remembered as refused
    monkeypatch.setattr("auditor.model.entries._MAX_PIECES", len(reader._pieces))
    assert reader.read(_sorted(_answers(["bob"]))) == accept_vote_entry(_answers(["bob"]))
    assert b'"question":"mayor","values":["bob"]' not in reader._pieces  # full: read, not kept
    assert _MAX_PIECES >= 4096
    monkeypatch.setattr("auditor.model.entries._MAX_PIECES", 10**6)
    long_text = _answers("x" * 600)
    assert reader.read(_sorted(long_text)) == accept_vote_entry(long_text)
    assert all(len(piece) <= 512 for piece in reader._pieces)  # a long text is read, not kept


def test_the_vote_reader_notes_each_distinct_answer_once() -> None:
    noted: list[Any] = []

    def note(answer: Any) -> tuple[str, int]:
        noted.append(answer)
        return answer.question, len(noted)

    reader = VoteReader(CID, note)
    first = reader.read_noted(_sorted(_answers(["alice"])))
    again = reader.read_noted(
        _sorted(_vote(nonce="B" * 21 + "A", answers=[{"question": "mayor", "values": ["alice"]}]))
    )
    assert first is not None and again is not None
    assert first[1] == again[1] == [("mayor", 1)] and len(noted) == 1  # noted once, then remembered
    assert reader.read(_sorted(_answers(["alice"]))) == first[0]  # read() is read_noted()'s entry
    assert (
        reader.read_noted(_sorted(_answers({"parks": 1.5}))) is None and len(noted) == 1
    )  # refused: no note
    assert VoteReader(CID).read_noted(_sorted(_answers(["bob"]))) == (
        accept_vote_entry(_answers(["bob"])),
        [None],
    )


def test_noted_answers_rows_are_the_rows_of_the_vote() -> None:
    kinds = {q.code: q.type for q in TEMPLATE.questions}
    plain, noted = AnswerRows(), AnswerRows()
    for index, (_, entry) in enumerate(VALID):
        plain.add(CID, "block", 3, index, entry, kinds)
        cells = [answer_cells(a.question, kinds[a.question], a.values) for a in entry.answers]
        noted.add_noted(CID, "block", 3, index, entry.nonce, cells)
    mark = noted.mark()
    noted.add_noted(CID, "block", 3, 99, NONCE, [answer_cells("mayor", "select", ("alice",))])
    noted.truncate(mark)
    got, want = noted.batches(), plain.batches()
    assert got[0].equals(want[0]) and got[1].equals(want[1])
    assert want[1].num_rows > len(VALID) * 2  # votes of several answers, option rows among them
    assert want[1].column("at").to_pylist()[-1] == len(VALID) - 1


def test_the_voter_reader_decodes_what_it_read() -> None:
    key, signature = "Ab-_" * 10 + "AbE", "z9" * 42 + "zw"
    entry, key_bytes, signature_bytes, digest = read_voter_entry(
        _sorted(_voter(key=key, signature=signature))
    ) or (None, b"", b"", b"")
    assert entry == VoterEntry(CID, CID, key, signature)
    assert (key_bytes, signature_bytes) == (b64u_decode(key, length=32), b64u_decode(signature, length=64))
    assert digest == entry.digest == voter_entry_digest(key, CID, CID)
    for refused in (
        _voter(key="A" * 42 + "B"),
        _voter(signature="A" * 85 + "B"),
        _voter(registrant=CID[:-1] + "b"),
        _voter(nonce=NONCE),
    ):
        assert read_voter_entry(_sorted(refused)) is None
    assert read_voter_entry(json.dumps(_voter()).encode()) is None  # not sorted


# ---------------------------------------------------------------------------- the ballot check


@pytest.mark.parametrize("entry", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_the_check_passes_valid_votes(entry: VoteEntry) -> None:
    assert valid_vote_check(TEMPLATE)(entry)
    assert noted_valid(TEMPLATE, entry)


@pytest.mark.parametrize("entry", [c[1] for c in INVALID], ids=[c[0] for c in INVALID])
def test_the_check_refuses_invalid_votes(entry: VoteEntry) -> None:
    assert vote_problems(TEMPLATE, entry)
    assert not valid_vote_check(TEMPLATE)(entry)
    assert not noted_valid(TEMPLATE, entry)


def test_the_noted_check_agrees_on_a_template_that_repeats_a_code() -> None:
    # TPL-VALID refuses such a template, so the recount never reads votes against one;
    # the two checks still agree on it: an answer must suit every question of its code
    body = TEMPLATE.to_json()
    first = body["questions"][0]
    again = dict(first, options=[{"code": "zed", "title": "Zed"}])
    twice = BallotTemplate.parse(dict(body, questions=[*body["questions"], again]), "template")
    assert twice.problems()
    for values in [(first["options"][0]["code"],), ("zed",), ()]:
        vote = VoteEntry(CID, NONCE, (Answer(first["code"], values),))
        assert noted_valid(twice, vote) == valid_vote_check(twice)(vote) == (not vote_problems(twice, vote))


_CODES = st.sampled_from(
    ["alice", "bob", "carol", "dave", "a", "b", "c", "d", "x", "y", "z", "parks", "roads"]
)
_QUESTIONS = st.sampled_from(["mayor", "council", "route", "budget", "comment", "other"])
_VALUES = st.one_of(
    st.lists(_CODES, max_size=5).map(tuple),
    st.dictionaries(_CODES, st.integers(-4, 6), max_size=3),
    st.text(max_size=12),
)


@settings(max_examples=1500)
@given(st.lists(st.tuples(_QUESTIONS, _VALUES), max_size=6))
def test_the_check_agrees_with_vote_problems(answers: list[tuple[str, Any]]) -> None:
    entry = VoteEntry.parse(
        {
            "template": CID,
            "nonce": NONCE,
            "answers": [
                {"question": q, "values": list(v) if isinstance(v, tuple) else v} for q, v in answers
            ],
        },
        "vote",
    )
    assert valid_vote_check(TEMPLATE)(entry) == (not vote_problems(TEMPLATE, entry))
    assert noted_valid(TEMPLATE, entry) == (not vote_problems(TEMPLATE, entry))


def test_the_check_agrees_on_a_real_elections_votes(corpus: Corpus) -> None:
    for template in corpus.templates:
        check = valid_vote_check(template)
        valid = [v for v in corpus.votes if check(v)]
        assert valid  # it does accept
        for vote in corpus.votes:
            assert check(vote) == (not vote_problems(template, vote)) == noted_valid(template, vote)


# ---------------------------------------------------------------------------- the voter entry digest


@settings(max_examples=200)
@given(st.text(max_size=50), st.text(max_size=61), st.text(max_size=61))
def test_the_voter_entry_digest_is_that_of_its_jcs(key: str, registrant: str, template: str) -> None:
    body = {"key": key, "registrant": registrant, "template": template}
    try:
        expected = sha256(jcs({"v": 1, "type": "voter_entry", "body": body}))
    except Exception:
        return  # a lone surrogate: refused either way
    assert voter_entry_digest(key, registrant, template) == expected
    entry = VoterEntry.parse(_voter(), "entry")
    body = {"key": KEY, "registrant": CID, "template": CID}
    assert entry.digest == sha256(jcs({"v": 1, "type": "voter_entry", "body": body}))


def test_a_counted_block_of_no_effective_template_is_decrypted_not_counted() -> None:
    """DEC-ENTRIES is whether the ciphertexts of a counted block decrypt (§8); a block
    naming a template that is not effective cannot be counted (BLK-ELIGIBLE says so), but
    its entries are still opened: a review found DEC-ENTRIES failed without trying."""
    from auditor.verify import recount

    private = (11).to_bytes(32, "little")
    election = public_of(private)
    template = "bagaaieranoteffective"
    good = [encrypt(b'{"any":"bytes"}', election, template, (5 + i).to_bytes(32, "little")) for i in range(2)]
    recount._init(private, {})  # no effective template at all
    try:
        fine = recount._read_block(recount._Rows(), "bagaaierablock", template, 0, [b"m"] * 2, good, good)
        assert not fine.counted and fine.problems == []
        broken = good[0][:-1] + bytes([good[0][-1] ^ 1])
        bad = recount._read_block(recount._Rows(), "bagaaierablock", template, 0, [b"m"], [broken], good[:1])
        assert not bad.counted
        assert [(check, "votes[0] does not decrypt" in message) for check, message in bad.problems] == [
            ("DEC-ENTRIES", True)
        ]
    finally:
        recount._STATE.clear()
