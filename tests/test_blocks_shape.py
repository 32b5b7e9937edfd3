"""The block checks judge a list's order on its values' 16-character b64u prefixes and
make the whole texts only for the lists the prefixes leave in doubt (blocks.shape_query):
the answers are those of comparing the whole texts, as before (spec §2: lists sorted by
their values' b64u text)."""

from __future__ import annotations

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.model.encoding import b64u_encode
from auditor.verify.blocks import MACROS, shape_query

# the expressions of the block checks before the prefixes (sessions 1 to 9)
WHOLE = """
SELECT cid, mt = list_sort(mt), len(list_distinct(mt)) = len(mt),
       vt = list_sort(vt), len(list_distinct(vt)) = len(vt),
       wt = list_sort(wt), len(list_distinct(wt)) = len(wt)
FROM (SELECT cid, list_transform(members, lambda x: b64u(x)) AS mt,
             list_transform(votes, lambda x: b64u(x)) AS vt,
             list_transform(voters, lambda x: b64u(x)) AS wt FROM blocks)
ORDER BY cid
"""
FACTS = (
    "members_sorted, members_distinct, votes_sorted, votes_distinct, voters_sorted, voters_distinct"
)

# values that share long prefixes (ciphertexts of one R, keys alike in their first bytes),
# shorter than, as long as and longer than the 12 bytes the prefix covers, and NULLs
_HEAD = st.sampled_from([b"", b"\x00" * 11, b"\xfb" * 12, b"\xff" * 12, bytes(range(12)), b"\x3e\x3f" * 7])
_VALUE = st.one_of(
    st.none(),
    st.builds(lambda head, tail: (head + tail)[:40], _HEAD, st.binary(max_size=6)),
    st.binary(max_size=20),
)
_LIST = st.one_of(
    st.lists(_VALUE, max_size=6),
    st.lists(_VALUE, max_size=6).map(lambda v: sorted(v, key=lambda x: (x is None, b64u_encode(x or b"")))),
)


def _table(blocks: list[tuple[list[bytes | None], list[bytes | None], list[bytes | None]]]) -> pa.Table:
    lists = pa.list_(pa.binary())
    return pa.table(
        {
            "cid": [f"b{i:04d}" for i in range(len(blocks))],
            "template": ["t"] * len(blocks),
            "members": pa.array([b[0] for b in blocks], lists),
            "votes": pa.array([b[1] for b in blocks], lists),
            "voters": pa.array([b[2] for b in blocks], lists),
        }
    )


def _both(table: pa.Table) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    con = duckdb.connect()
    con.execute(MACROS)
    con.register("blocks", table)
    whole = con.execute(WHOLE).fetchall()
    prefixed = con.execute(f"SELECT cid, {FACTS} FROM ({shape_query('blocks')}) ORDER BY cid").fetchall()
    return whole, prefixed


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_LIST, _LIST, _LIST), min_size=1, max_size=12))
def test_prefixes_judge_lists_as_their_whole_texts_do(
    blocks: list[tuple[list[bytes | None], list[bytes | None], list[bytes | None]]],
) -> None:
    whole, prefixed = _both(_table(blocks))
    assert prefixed == whole


def test_lists_alike_in_their_first_twelve_bytes_are_judged_on_the_rest() -> None:
    same = b"\x01" * 12
    blocks = [
        ([same + b"\x02", same + b"\x01"], [], []),  # prefixes equal: out of order on the 13th byte
        ([same + b"\x01", same + b"\x02"], [], []),  # in order on the 13th byte
        ([same + b"\x01", same + b"\x01"], [], []),  # the same value twice
        ([same, same + b"\x00"], [], []),  # a value, then a longer one it begins
        ([b"\x01", same], [], []),  # a short value's whole text is its prefix
    ]
    whole, prefixed = _both(_table(blocks))
    assert prefixed == whole
    sorted_, distinct = [r[1] for r in prefixed], [r[2] for r in prefixed]
    assert sorted_ == [False, True, True, True, True]
    assert distinct == [True, True, False, True, True]
