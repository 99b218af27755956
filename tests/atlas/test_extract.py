"""The vectorised extractors against the ``Counter`` reference: exact count and doc_freq per gram."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlas.config import STRATA, AtlasConfig
from atlas.extract import SCHEMA, count_arrow, count_block
from atlas.keys import count_keys
from atlas.reference import reference_count, unicode_runs, word_grams

CFG = AtlasConfig()
WIDE = AtlasConfig(char_orders=(1, 3, 5, 8), word_orders=(2, 4, 5), unicode_orders=(1, 3))

FIXTURES = {
    "empty corpus": [],
    "one empty doc": [b""],
    "empty docs around text": [b"", b"the cat", b"", b"", b"sat\n"],
    "whitespace only": [b" \t\n\r\x0b\x0c  ", b"\n\n"],
    "tokens at boundaries": [b"ab", b"cd", b" ef", b"gh "],
    "repeated grams": [b"the the the the ", b"of the of the\n", b"the"],
    "multi-byte": ["naïve café — 日本語のテキスト 😀😀!".encode(), "ÅÄÖ åäö".encode()],
    "invalid utf-8": [
        b"\xff\xfe abc \xe2\x82",
        b"\xac\xc3\xa9\xc3",
        b"\xa9 \xed\xa0\x80 \xf4\x90\x80\x80",
    ],
    "split sequence across docs": [b"price \xe2\x82", b"\xac 5", "€".encode()],
    "nul and control bytes": [b"a\x00b\x00\x00c", b"\x00", b"\x1c\x1d x\x1fy"],
    "short docs": [b"a", b"b", b"ab", b"abc", b"abcd"],
}


def as_dict(table: pa.Table) -> dict[bytes, tuple[int, int]]:
    d = table.to_pydict()
    return {g: (c, f) for g, c, f in zip(d["gram"], d["count"], d["doc_freq"])}


def assert_matches_reference(docs: list[bytes], cfg: AtlasConfig = CFG) -> None:
    got, ref = count_block(docs, cfg), reference_count(docs, cfg)
    for stratum in STRATA:
        table = got.strata[stratum]
        assert table.schema == SCHEMA
        assert table.num_rows == len(as_dict(table)), f"{stratum}: duplicate grams in one block"
        assert as_dict(table) == ref.strata[stratum], stratum
        grams = table.column("gram").to_pylist()
        if stratum == "char":
            assert table.column("n").to_pylist() == [len(g) for g in grams]
    assert got.unicode_invalid_bytes == ref.unicode_invalid_bytes
    assert (got.n_docs, got.n_bytes) == (len(docs), sum(map(len, docs)))


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("cfg", [CFG, WIDE], ids=["default", "wide"])
def test_fixtures_match_reference(name: str, cfg: AtlasConfig) -> None:
    assert_matches_reference(FIXTURES[name], cfg)


def test_definitions_on_a_known_example() -> None:
    docs = [b"of the cat of the\n", "é€x".encode()]
    ref = reference_count(docs, CFG).strata
    got = as_dict(count_block(docs, CFG).strata["word"])
    assert got[b"of the "] == (2, 1) and got[b"the "] == (2, 1) and got[b"of the cat "] == (1, 1)
    assert word_grams(b"a  b\tc", 2) == [b"a b ", b"b c "]
    assert ref["unicode"]["é€".encode()] == (1, 1) and b"x" not in ref["unicode"]
    assert unicode_runs(b"\xc3\xa9\xff\xc3\xa9") == (["é", "é"], 1)


def test_invalid_bytes_are_counted_and_break_runs() -> None:
    docs = [b"\xc3\xa9\xe2\x82\xc3\xa9", b"\xed\xa0\x80"]  # truncated euro; an encoded surrogate
    got = count_block(docs, CFG)
    assert got.unicode_invalid_bytes == 2 + 3
    unicode = as_dict(got.strata["unicode"])
    assert unicode == {"é".encode(): (2, 1)}
    assert as_dict(got.strata["char"])[b"\xe2\x82"] == (1, 1)  # raw bytes still count as chars


def test_arrow_input_equals_bytes_input() -> None:
    docs = [b"x" * 10] + FIXTURES["invalid utf-8"] + FIXTURES["multi-byte"] + [b"the end"]
    sliced = pa.array(docs, pa.binary()).slice(1)  # a non-zero array offset
    for array in (
        sliced,
        sliced.cast(pa.large_binary()),
        pa.chunked_array([sliced[:2], sliced[2:]]),
    ):
        got = count_arrow(array, CFG)
        want = count_block(docs[1:], CFG)
        for stratum in STRATA:
            assert as_dict(got.strata[stratum]) == as_dict(want.strata[stratum])


@pytest.mark.parametrize("n_docs", [1, 3, 300])
def test_count_keys_paths(n_docs: int) -> None:
    import numpy as np

    rng = np.random.default_rng(n_docs)
    # per-document tables (long documents) or the presence table (short ones), 32-bit sort,
    # document groups, by-segment / 64-bit, dense re-numbering
    cases = [(200, 100_000), (200, 2_000)] + [(h, 100_000) for h in (2**20, 2**24, 2**31, 2**62)]
    for high, m in cases:
        doc = np.sort(rng.integers(0, n_docs, m)).astype(np.uint32)
        key = rng.integers(0, 50, len(doc)).astype(np.uint64) * np.uint64(high // 50)
        keys, counts, freqs = count_keys(key, doc, n_docs)
        pairs = set(zip(key.tolist(), doc.tolist()))
        for k, c, f in zip(keys.tolist(), counts.tolist(), freqs.tolist()):
            assert c == int((key == k).sum()) and f == sum(1 for p in pairs if p[0] == k)
        assert keys.tolist() == sorted(set(key.tolist()))


def test_partitioned_grams_share_buckets_across_blocks() -> None:
    first = FIXTURES["multi-byte"] + FIXTURES["repeated grams"]
    second = [b"the cat of the mat", "日本語 café".encode(), b"\xff the"]
    buckets: dict[tuple[str, bytes], int] = {}
    for docs in (first, second):
        plain, parted = count_block(docs, CFG), count_block(docs, CFG, partitions=7)
        for stratum in STRATA:
            assert as_dict(parted.strata[stratum]) == as_dict(plain.strata[stratum])
            for batch in parted.strata[stratum].to_batches():
                column = batch.column("bucket").to_pylist()
                assert column == sorted(column) and all(0 <= b < 7 for b in column)
                for gram, bucket in zip(batch.column("gram").to_pylist(), column):
                    assert buckets.setdefault((stratum, gram), bucket) == bucket
    assert len({b for (s, _), b in buckets.items() if s == "word"}) > 3


def test_a_single_large_document() -> None:
    rng = random.Random(0)
    words = ["the", "of", "and", "naïve", "日本", "x\xff", "a"] + [f"w{i}" for i in range(400)]
    text = " ".join(rng.choice(words) for _ in range(60_000))
    doc = text.encode("utf-8", errors="surrogateescape")
    assert len(doc) > 200_000
    assert_matches_reference([doc])
    assert_matches_reference([doc[:100_000], doc[100_000:]])


def test_many_small_documents_use_the_segment_path() -> None:
    rng = random.Random(1)
    docs = [bytes(rng.choice(b"abcd ") for _ in range(rng.randrange(300, 600))) for _ in range(300)]
    assert_matches_reference(docs)


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_ALPHABET = st.sampled_from(list("ab é€日😀") + [" ", "\n", "\t"])
_BYTES = st.sampled_from([b"a", b"b", b" ", b"\n", b"\xc3", b"\xa9", b"\xe2", b"\x82", b"\xff"])


@SETTINGS
@given(st.lists(st.text(max_size=60), max_size=8))
def test_random_unicode_text(texts: list[str]) -> None:
    assert_matches_reference([t.encode("utf-8") for t in texts])


@SETTINGS
@given(st.lists(st.text(_ALPHABET, max_size=80), max_size=8))
def test_random_text_with_many_repeats(texts: list[str]) -> None:
    assert_matches_reference([t.encode("utf-8") for t in texts], WIDE)


@SETTINGS
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_random_bytes(docs: list[bytes]) -> None:
    assert_matches_reference(docs)


@SETTINGS
@given(st.lists(st.lists(_BYTES, max_size=40).map(b"".join), max_size=8))
def test_random_bytes_around_multibyte_sequences(docs: list[bytes]) -> None:
    assert_matches_reference(docs)
    assert_matches_reference(docs, WIDE)
