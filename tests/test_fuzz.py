"""Fuzzing every parser of hostile input (issue 9), the quick form that runs in the suite.

Each parser (tests/fuzzing.py: JSON, b64u, CIDs, envelopes and bodies, the harvest's
``open_record``, decrypted entries, templates, histograms, CAR, archive files, RFC 3161
tokens and certificates, ciphertexts, the trust file, signed reports, a node's log) gets
random bytes and mutated seeds from a simulated election; every input must be accepted or
refused with vtaudit's own error type, never any other exception. The round trips of b64u,
CIDs and JCS are properties of their own. The long job is ``bench/fuzz.py``.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.crypto import rfc3161
from auditor.errors import EncodingError, InputError
from auditor.model.encoding import (
    MAX_SAFE_INT,
    b64u_decode,
    b64u_encode,
    cid_binary,
    cid_from_binary,
    cid_of,
    cid_to_binary,
    jcs,
    json_shape_problem,
    parse_json,
)
from auditor.trust import load_trust
from tests.fuzzing import TARGETS, Corpus, build_corpus, mutate, run_target

NAMES = list(TARGETS)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return build_corpus(tmp_path_factory.mktemp("fuzz"))


def test_every_seed_is_accepted(corpus: Corpus) -> None:
    """The seeds are good inputs: a target that refused them would fuzz nothing."""
    for name, target in TARGETS.items():
        for seed in target.seeds(corpus)[:10]:
            if name != "harvest":  # its seeds are claimed under another record's CID on purpose, some
                assert run_target(corpus, name, seed) == "accepted", name


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40)
@given(data=st.binary(max_size=600))
def test_random_bytes_are_refused_cleanly(corpus: Corpus, name: str, data: bytes) -> None:
    assert run_target(corpus, name, data) in ("accepted", "refused")


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=60)
@given(pick=st.integers(0, 10**6), seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4))
def test_mutated_seeds_are_parsed_or_refused_cleanly(
    corpus: Corpus, name: str, pick: int, seeds: list[int]
) -> None:
    """Bit flips, cuts, repeats, splices, hostile tokens and structured JSON changes."""
    pool = TARGETS[name].seeds(corpus)
    data = pool[pick % len(pool)]
    for seed in seeds:
        data = mutate(random.Random(seed), data, corpus)
    assert run_target(corpus, name, data) in ("accepted", "refused")


@pytest.mark.parametrize("name", ["json", "envelope", "harvest", "entry", "template", "histogram", "report"])
@given(depth=st.integers(60, 70), where=st.integers(0, 10**6), opener=st.sampled_from([b"[", b'{"a":']))
def test_nesting_inserted_anywhere_is_refused_cleanly(
    corpus: Corpus, name: str, depth: int, where: int, opener: bytes
) -> None:
    """A seed with a deep run of openers (closed or not) spliced in at any byte."""
    pool = TARGETS[name].seeds(corpus)
    seed = pool[where % len(pool)]
    i = where % (len(seed) + 1)
    closer = b"]" if opener == b"[" else b"}"
    data = seed[:i] + opener * depth + b"1" + closer * (depth if where % 2 else 0) + seed[i:]
    assert run_target(corpus, name, data) in ("accepted", "refused")


# ---------------------------------------------------------------------------- round trips


@given(st.binary(max_size=200))
def test_b64u_round_trip(data: bytes) -> None:
    text = b64u_encode(data)
    assert b64u_decode(text) == data
    assert b64u_decode(text, length=len(data)) == data


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ ", max_size=90))
def test_b64u_accepts_only_its_own_encoding(text: str) -> None:
    try:
        raw = b64u_decode(text)
    except EncodingError:
        return
    assert b64u_encode(raw) == text


@given(st.binary(max_size=300))
def test_cid_round_trip(data: bytes) -> None:
    text = cid_of(data)
    assert cid_to_binary(text) == cid_binary(data)
    assert cid_from_binary(cid_to_binary(text)) == text


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
    | st.text(st.characters(codec="utf-8"), max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_JSON)
def test_jcs_round_trip(value: object) -> None:
    canonical = jcs(value)
    assert parse_json(canonical) == value
    assert jcs(parse_json(canonical)) == canonical


# ---------------------------------------------------------------------------- the depth pre-scan


def _reference_depth(data: bytes) -> int:
    """Nesting depth by a plain byte-by-byte walk that knows strings and escapes."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


_STRING = st.lists(st.sampled_from([b"a", b"[", b"]", b"{", b"}", b'\\"', b"\\\\", b"\\n"]), max_size=6).map(
    lambda parts: b'"' + b"".join(parts) + b'"'
)


@settings(max_examples=300)
@given(st.lists(st.sampled_from([b"[", b"]", b"{", b"}", b",", b"1"]) | _STRING, max_size=40))
def test_the_depth_pre_scan_agrees_with_a_byte_walk(parts: list[bytes]) -> None:
    """Brackets in strings (with escaped quotes and backslashes) do not count: the pre-scan
    finds the depth a byte-by-byte walk finds, balanced or not."""
    data = b"".join(parts)
    for limit in (0, 2, 5):
        problem = json_shape_problem(data, max_depth=limit)
        assert (problem is not None) == (_reference_depth(data) > limit), data


@given(st.lists(st.sampled_from([b"[", b"]", b'"', b"\\", b"a", b"{"]), max_size=60))
def test_the_depth_pre_scan_never_fails_on_malformed_bytes(parts: list[bytes]) -> None:
    """Unterminated strings, stray backslashes: an answer (json.loads will say what is wrong)."""
    problem = json_shape_problem(b"".join(parts), max_depth=3)
    assert problem is None or "64" not in problem


@given(_JSON, st.integers(0, 80))
def test_valid_json_within_the_depth_limit_parses(value: object, depth: int) -> None:
    data = b"[" * depth + jcs(value) + b"]" * depth
    if _reference_depth(data) <= 64:
        expected = value
        for _ in range(depth):
            expected = [expected]
        assert parse_json(data) == expected
    else:
        with pytest.raises(EncodingError, match="nested more than 64 deep"):
            parse_json(data)


# ---------------------------------------------------------------------------- regressions

# Inputs that crashed a parser before issue 9 (found by bench/fuzz.py and by reading the
# code); each must now be refused with vtaudit's own error type.
REGRESSIONS = [
    ("trust", b"a = " + b"[" * 100_000),  # RecursionError out of tomllib
    ("trust", b"a = " + b"{b=" * 100_000),  # RecursionError out of tomllib
    ("trust", b"[tsa]\nroots = 5\n"),  # TypeError: 'int' object is not iterable
    ("trust", b'[tsa]\nroots = "tsa-root.pem"\n'),  # a string: each character was read as a file
    ("trust", b"tsa = [1]\n"),  # [tsa] not a table: silently ignored
    ("log", b'{"seq": 1, "cid": ' + b"[" * 100_000 + b"\n"),  # RecursionError out of json.loads
    ("json", b"[" * 1_000_000),  # refused by the pre-scan, no recursion
    ("template", jcs({"questions": []})[:-1] + b',"x":' + b"[" * 5000 + b"}"),
]


@pytest.mark.parametrize(
    ("name", "data"), REGRESSIONS, ids=[f"{n}-{i}" for i, (n, _d) in enumerate(REGRESSIONS)]
)
def test_regression_inputs_are_refused(corpus: Corpus, name: str, data: bytes) -> None:
    assert run_target(corpus, name, data) == "refused"


def test_seeds_come_from_a_simulated_election(corpus: Corpus) -> None:
    assert (corpus.root / "evidence.car").is_file()
    assert {e.type for e in corpus.envelopes} >= {"vote_block", "ballot_template", "result", "tally_node"}
    assert corpus.tokens and corpus.ciphertexts and corpus.votes
    assert isinstance(corpus.scratch, Path)


def _bad_version(certificate: bytes) -> bytes:
    """The certificate with its version field set to 66, as in the input bench/fuzz.py found."""
    fixed = certificate.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x42", 1)
    assert fixed != certificate
    return fixed


def test_a_certificate_with_a_bad_version_is_refused_not_raised(corpus: Corpus) -> None:
    """cryptography raises InvalidVersion, which is not a ValueError: it escaped _try_cert."""
    bad = _bad_version(corpus.tsa_certificates[0])
    assert rfc3161._try_cert(bad) is None
    assert run_target(corpus, "certificate", bad) == "refused"
    token, digest = corpus.tokens[0]
    outcome = rfc3161.verify_token(token, digest, [bad], corpus.tsa_roots)
    assert not outcome.ok and not any("unexpected" in p for p in outcome.token_problems)


def test_a_trust_root_with_a_bad_version_is_an_input_error(corpus: Corpus, tmp_path: Path) -> None:
    pem = base64.encodebytes(_bad_version(corpus.tsa_roots[0])).decode()
    (tmp_path / "root.pem").write_text(f"-----BEGIN CERTIFICATE-----\n{pem}-----END CERTIFICATE-----\n")
    (tmp_path / "trust.toml").write_text('[tsa]\nroots = ["root.pem"]\n')
    with pytest.raises(InputError, match="holds no PEM certificate"):
        load_trust(tmp_path / "trust.toml")
