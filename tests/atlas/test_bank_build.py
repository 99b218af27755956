"""Banks cut from the atlas (spec §4.2) against a plain-Python reference, their files and errors."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from atlas_testdata import reference_counts

from atlas import bank as bank_mod
from atlas.bank import (
    bank_coverage,
    bank_summary,
    build_bank,
    parse_quotas,
    read_bank_file,
    save_bank_file,
)
from atlas.corpus import corpus_bytes
from atlas.query import STRATA, AtlasError


def reference_scores() -> dict[str, Counter]:
    """``c_s(x)``: every 3-byte window of every entry, weighted by the entry's count."""
    out = {}
    for stratum, (count, _) in reference_counts().items():
        c = Counter()
        for gram, k in count.items():
            for i in range(len(gram) - 2):
                c[gram[i : i + 3]] += k
        if c:
            out[stratum] = c
    return out


def reference_bank(size: int, quotas: dict[str, float]) -> dict[bytes, float]:
    """§4.2 written out with lists and sorts: ``{trigram: log prior}``."""
    scores = reference_scores()
    pooled = Counter()
    for c in scores.values():
        total = sum(c.values())
        for x, k in c.items():
            pooled[x] += k / total
    chosen: list[bytes] = []
    for stratum in STRATA:
        c = scores.get(stratum, Counter())
        top = sorted(c, key=lambda x: (-c[x], x))[: math.floor(quotas[stratum] * size)]
        chosen += [x for x in top if x not in chosen]
    for x in sorted(pooled, key=lambda x: (-pooled[x], x)):
        if len(chosen) >= size:
            break
        if x not in chosen:
            chosen.append(x)
    return {x: math.log(pooled[x] / len(scores)) for x in chosen}


def as_dict(trigrams: np.ndarray, log_prior: np.ndarray) -> dict[bytes, float]:
    return {bytes(row.tolist()): float(p) for row, p in zip(trigrams, log_prior)}


@pytest.mark.parametrize(
    ("size", "quotas"),
    [
        (50, None),
        (37, "char=1"),
        (64, "word=0.5,unicode=0.5"),
        (120, "char=0.2,word=0.3,unicode=0.5"),  # unicode has 4 trigrams: backfill
    ],
)
def test_bank_matches_reference(atlas_dir, size, quotas):
    tri, prior, prov = build_bank(atlas_dir, size, quotas)
    assert tri.dtype == np.uint8 and tri.shape == (size, 3)
    assert prior.dtype == np.float32 and prior.shape == (size,)
    assert len(np.unique(tri, axis=0)) == size
    expected = reference_bank(size, parse_quotas(quotas))
    got = as_dict(tri, prior)
    assert got.keys() == expected.keys()
    for x, p in expected.items():
        assert got[x] == pytest.approx(p, rel=1e-6)
    assert np.all(np.diff(prior) <= 0)  # rows come sorted by prior
    contributions = prov["contributions"]
    assert sum(contributions[s]["new"] for s in STRATA) + contributions["backfill"] == size


def test_quotas_are_respected(atlas_dir):
    size, quotas = 40, {"char": 0.5, "word": 0.25, "unicode": 0.25}
    got = as_dict(*build_bank(atlas_dir, size, quotas)[:2])
    scores = reference_scores()
    for stratum, q in quotas.items():
        c = scores[stratum]
        want = math.floor(q * size)
        top = sorted(c, key=lambda x: (-c[x], x))[:want]
        assert set(top) <= got.keys(), stratum


def test_backfill_fills_what_dedupe_removed(atlas_dir):
    # char and word share their most frequent trigrams ("the", "he "), so dedupe leaves a gap.
    _, _, prov = build_bank(atlas_dir, 30, "char=0.5,word=0.5")
    c = prov["contributions"]
    assert c["char"]["new"] == 15 and c["word"]["new"] < 15
    assert c["backfill"] == 30 - 15 - c["word"]["new"] > 0


def test_prior_is_log_of_a_distribution(atlas_dir):
    n_all = len(set().union(*reference_scores().values()))
    tri, prior, _ = build_bank(atlas_dir, n_all, None)
    assert np.exp(prior.astype(np.float64)).sum() == pytest.approx(1.0, rel=1e-6)


def test_deterministic_and_independent_of_file_split(atlas_dir, make_atlas):
    a = build_bank(atlas_dir, 60, None)
    b = build_bank(atlas_dir, 60, None)
    c = build_bank(make_atlas(parts=5), 60, None)
    for x in (b, c):
        np.testing.assert_array_equal(a[0], x[0])
        np.testing.assert_array_equal(a[1], x[1])


def test_saved_bank_loads_with_the_geolip_loader(atlas_dir, tmp_path):
    from geolip.aleph.bank import load_bank

    tri, prior, prov = build_bank(atlas_dir, 64, None)
    path = save_bank_file(tmp_path / "banks" / "b.safetensors", tri, prior, prov)
    bank = load_bank(path)
    assert bank.size == 64
    np.testing.assert_array_equal(bank.trigrams.numpy(), tri.astype(np.int64))
    np.testing.assert_array_equal(bank.log_prior.numpy(), prior)
    assert bank.provenance["config_hash"] == "cafef00d1234"
    assert bank.provenance["corpus"]["split"] == "train"
    assert bank.provenance["quotas"] == {"char": 0.6, "word": 0.3, "unicode": 0.1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["b.safetensors"]


def test_existing_file_is_kept_without_overwrite(atlas_dir, tmp_path):
    tri, prior, prov = build_bank(atlas_dir, 16, None)
    path = tmp_path / "b.safetensors"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        save_bank_file(path, tri, prior, prov)
    assert path.read_bytes() == b"precious"
    save_bank_file(path, tri, prior, prov, overwrite=True)
    np.testing.assert_array_equal(read_bank_file(path)[0], tri)


def test_failed_write_leaves_nothing(atlas_dir, tmp_path, monkeypatch):
    tri, prior, prov = build_bank(atlas_dir, 16, None)

    def broken(arrays, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(bank_mod, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_bank_file(tmp_path / "b.safetensors", tri, prior, prov)
    assert list(tmp_path.iterdir()) == []


def test_size_larger_than_atlas_names_both_numbers(atlas_dir):
    n_all = len(set().union(*reference_scores().values()))
    build_bank(atlas_dir, n_all, None)
    with pytest.raises(AtlasError, match=rf"size {n_all + 1} .* the {n_all} distinct trigrams"):
        build_bank(atlas_dir, n_all + 1, None)
    with pytest.raises(AtlasError, match="positive integer"):
        build_bank(atlas_dir, 0, None)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("char=0.6,word=0.3", "sum to 1"),
        ("char=0.6,word=0.3,emoji=0.1", "unknown stratum 'emoji'"),
        ("char=lots", "not a number"),
        ("char=-0.5,word=1.5", ">= 0"),
        ("char=nan,word=1", ">= 0"),
        ("char", "malformed quotas"),
        ("char=0.5,,word=0.5", "malformed quotas"),
        ("char=0.5,char=0.5", "twice"),
    ],
)
def test_malformed_quotas(spec, match):
    with pytest.raises(AtlasError, match=match):
        parse_quotas(spec)


def test_quotas_parse_with_spaces_and_defaults():
    assert parse_quotas(" char = 0.7 , word=0.3") == {"char": 0.7, "word": 0.3, "unicode": 0.0}
    assert parse_quotas(None) == {"char": 0.6, "word": 0.3, "unicode": 0.1}


def test_banks_come_from_training_text_only(make_atlas):
    root = make_atlas(split="validation")
    with pytest.raises(AtlasError, match="training split only"):
        build_bank(root, 10, None)
    assert build_bank(root, 10, None, allow_split=True)[0].shape == (10, 3)


def test_corrupt_parquet_fails_before_anything_is_written(make_atlas, tmp_path):
    root = make_atlas()
    (root / "grams" / "stratum=char" / "part-00000.parquet").write_bytes(b"\0" * 100)
    with pytest.raises(AtlasError, match="part-00000.parquet"):
        build_bank(root, 10, None)


def test_coverage_equals_a_direct_count(atlas_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("the cat sat on the mat of the day, café.\n" * 30) + "zebra quiz\n" * 10)
    tri, prior, prov = build_bank(atlas_dir, 48, None)
    path = save_bank_file(tmp_path / "b.safetensors", tri, prior, prov)
    uri = f"file:{corpus}"
    out = bank_coverage(path, uri, "validation")
    data, _ = corpus_bytes(uri, "validation", 0.05)
    stream = [data[i : i + 3] for i in range(0, len(data) - 2, 3)]
    rows = {bytes(r.tolist()) for r in tri}
    assert out["n_trigrams"] == len(stream)
    assert out["in_bank"] == sum(x in rows for x in stream)
    assert out["coverage"] == pytest.approx(out["in_bank"] / len(stream))
    assert out["distinct_trigrams"] == len(set(stream))
    assert out["distinct_in_bank"] == len(set(stream) & rows)
    train = bank_coverage(path, uri, "train")
    assert train["n_trigrams"] == len(corpus_bytes(uri, "train", 0.05)[0]) // 3


def test_summary_reports_size_top_and_entropy(atlas_dir, tmp_path):
    tri, prior, prov = build_bank(atlas_dir, 32, None)
    path = save_bank_file(tmp_path / "b.safetensors", tri, prior, prov)
    out = bank_summary(path, top=5)
    p = np.exp(prior.astype(np.float64))
    q = p / p.sum()
    assert out["size"] == 32
    assert out["prior_mass"] == pytest.approx(p.sum())
    assert out["prior_entropy_bits"] == pytest.approx(-(q * np.log2(q)).sum())
    assert [t for t, _ in out["top"]] == [bytes(r.tolist()) for r in tri[:5]]
    with pytest.raises(AtlasError, match="does not exist"):
        bank_summary(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(AtlasError, match="not a readable bank"):
        bank_summary(tmp_path / "junk.safetensors")
