"""The Kneser-Ney baseline (``atlas.kn``) against a plain pure-Python KN (``kn_oracle``)."""

from __future__ import annotations

import numpy as np
import pytest
from kn_oracle import OracleKN

from atlas.build import build_atlas
from atlas.config import AtlasConfig
from atlas.corpus import encode_text, iter_split
from atlas.kn import KneserNey, discounts_of, kn_atlas_config, read_char_counts
from atlas.query import AtlasError
from atlas.reference import reference_count


def side_docs(uri: str, side: str) -> list[bytes]:
    return [encode_text(d.text) for d in iter_split(uri, side, AtlasConfig().heldout_fraction)]


def raw_counts(docs: list[bytes], order: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{n: (packed keys, counts)}`` from the atlas's Counter reference."""
    cfg = kn_atlas_config(order)
    char = reference_count(docs, cfg).strata["char"]
    out = {}
    for n in range(1, order + 1):
        grams = [(g, c) for g, (c, _) in char.items() if len(g) == n]
        keys = np.array([int.from_bytes(g, "big") for g, _ in grams], np.uint64)
        out[n] = (keys, np.array([c for _, c in grams], np.int64))
    return out


@pytest.fixture(scope="module")
def python_docs() -> tuple[list[bytes], bytes]:
    """~60 KB of training documents and 4 KB of held-out bytes of ``builtin:python-docs``."""
    train = side_docs("builtin:python-docs", "train")
    kept, size = [], 0
    for doc in train:
        kept.append(doc)
        size += len(doc)
        if size > 60_000:
            break
    held = b"".join(side_docs("builtin:python-docs", "validation"))[:4000]
    return kept, held


@pytest.mark.parametrize("order", [1, 3, 5])
def test_bits_equal_the_pure_python_kn(python_docs, order) -> None:
    docs, held = python_docs
    model = KneserNey.from_counts(raw_counts(docs, order), order)
    oracle = OracleKN(docs, order)
    got = model.bits(np.frombuffer(held, np.uint8))
    np.testing.assert_allclose(got, oracle.bits(held), rtol=1e-9, atol=1e-12)
    for level in model.levels:
        assert level.discounts == pytest.approx(oracle.d[level.n], abs=1e-12)


def test_higher_orders_fit_text_better_and_every_distribution_sums_to_one(python_docs) -> None:
    docs, held = python_docs
    data = np.frombuffer(held, np.uint8)
    scores = {n: KneserNey.from_counts(raw_counts(docs, n), n).bpb(data) for n in (1, 2, 3, 5)}
    assert scores[1] > scores[2] > scores[3] > scores[5]
    model = KneserNey.from_counts(raw_counts(docs, 4), 4)
    # Every byte after each of a few histories, seen or not: the probabilities add up to one.
    for history in (b"def ", b"the ", b"\x00\x01\x02", b"zzq"):
        rows = np.frombuffer(history, np.uint8)
        probe = np.concatenate(
            [np.tile(rows, (256, 1)), np.arange(256, dtype=np.uint8)[:, None]], 1
        )
        total = sum(2.0 ** -model.bits(row)[-1] for row in probe)
        assert total == pytest.approx(1.0, abs=1e-9)


def test_discounts_fall_back_and_stay_in_range() -> None:
    assert discounts_of(np.array([5, 7, 9])) == (0.5, 0.5, 0.5)  # no n1, n2: Y's fallback
    d = discounts_of(np.array([1, 1, 1, 1, 2]))  # n1=4, n2=1, no n3: D3+ falls back to Y
    y = 4 / 6
    assert d == pytest.approx((1 - 2 * y / 4, 2 - 3 * y * 0 / 1, y))
    assert all(0 <= x <= k for k, x in zip((1, 2, 3), discounts_of(np.array([1, 2, 2, 2, 3]))))


@pytest.mark.ray
def test_a_built_kn_atlas_gives_the_pure_python_kn(ray_session, tmp_path) -> None:
    uri = "builtin:tiny"
    out = build_atlas(uri, tmp_path / "kn", kn_atlas_config(5), progress=False).path
    model = KneserNey.from_atlas(out, 5)
    held = b"".join(side_docs(uri, "validation")) or b"the cat"
    oracle = OracleKN(side_docs(uri, "train"), 5)
    np.testing.assert_allclose(model.bits(np.frombuffer(held, np.uint8)), oracle.bits(held))
    # An order the atlas does not count, and an atlas that dropped its singletons: refused.
    with pytest.raises(AtlasError, match=r"needs orders 1\.\.6"):
        read_char_counts(out, 6)
    pruned = build_atlas(
        uri, tmp_path / "pruned", kn_atlas_config(3).replace(min_count=2), progress=False
    ).path
    with pytest.raises(AtlasError, match="needs every gram, singletons included"):
        KneserNey.from_atlas(pruned, 3)
