"""``geolip atlas build``: the Ray Data job's Parquet output equals the ``Counter`` reference.

The build tests share the session-wide local Ray (``ray_session``); the config, budget and text
helpers below them need no Ray.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atlas.build import FORMAT, build_atlas
from atlas.config import STRATA, AtlasConfig, parse_quotas, parse_size
from atlas.corpus import CorpusError, corpus_bytes, encode_text, iter_split
from atlas.merge import OUTPUT_SCHEMA, allocate_budgets, gram_text, invalid_utf8
from atlas.reference import reference_count
from pipelines.cli import main

# Everything kept: the output must be the reference count itself.
KEEP_ALL = AtlasConfig(target_size=10**9, min_count=1, block_bytes=700, partitions=3)
TEXTS = {
    "a.txt": "The cat sat on the mat.\nThe dog sat on the log.\n" * 3,
    "b.txt": "naïve café — 日本語のテキスト, 😀 the cat\n",
    "c.txt": "of the people, by the people, for the people\n\n" * 4,
    "d.txt": "Ärger über Öl; ÅÄÖ åäö\tthe end\n",
}


def write_corpus(root: Path) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in TEXTS.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / "e.txt").write_bytes(b"latin-1 caf\xe9 and a cut \xe2\x82 euro \xff\xfe the cat\n")
    return f"file:{root}/*.txt"


def train_docs(uri: str, cfg: AtlasConfig) -> list[bytes]:
    return [encode_text(d.text) for d in iter_split(uri, cfg.split, cfg.heldout_fraction)]


def read_atlas(path: Path) -> dict[str, list[dict]]:
    con = duckdb.connect()
    glob = f"{path}/grams/**/*.parquet"
    rows = con.sql(
        f"SELECT stratum, gram, text, n, count, doc_freq, rank FROM "
        f"read_parquet('{glob}', hive_partitioning=true) ORDER BY stratum, rank"
    ).fetchall()
    out: dict[str, list[dict]] = {s: [] for s in STRATA}
    for stratum, gram, text, n, count, doc_freq, rank in rows:
        out[stratum].append(
            dict(gram=gram, text=text, n=n, count=count, doc_freq=doc_freq, rank=rank)
        )
    return out


def ranked(counts: dict[bytes, tuple[int, int]]) -> list[tuple[bytes, int, int]]:
    return sorted(((g, c, f) for g, (c, f) in counts.items()), key=lambda r: (-r[1], r[0]))


@pytest.fixture(scope="module")
def corpus_uri(tmp_path_factory) -> str:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def full_atlas(ray_session, corpus_uri, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlases") / "full"
    return build_atlas(corpus_uri, out, KEEP_ALL, progress=False)


@pytest.mark.ray
def test_output_equals_the_reference_count(full_atlas, corpus_uri) -> None:
    ref = reference_count(train_docs(corpus_uri, KEEP_ALL), KEEP_ALL)
    got = read_atlas(full_atlas.path)
    for stratum in STRATA:
        want = ranked(ref.strata[stratum])
        rows = got[stratum]
        assert [(r["gram"], r["count"], r["doc_freq"]) for r in rows] == want, stratum
        assert [r["rank"] for r in rows] == list(range(1, len(want) + 1))
        assert all(r["text"] == r["gram"].decode("utf-8", "backslashreplace") for r in rows)
        if stratum == "char":
            assert all(r["n"] == len(r["gram"]) for r in rows)
        if stratum == "word":
            assert all(r["n"] == r["gram"].count(b" ") for r in rows)
    assert full_atlas.manifest["unicode_invalid_bytes"] == ref.unicode_invalid_bytes > 0


@pytest.mark.ray
def test_layout_schema_and_manifest(full_atlas, corpus_uri) -> None:
    path = full_atlas.path
    assert sorted(p.name for p in path.iterdir()) == ["grams", "manifest.json"]
    for stratum in STRATA:
        parts = sorted((path / "grams" / f"stratum={stratum}").glob("part-*.parquet"))
        assert parts and pq.read_schema(parts[0]).remove_metadata() == OUTPUT_SCHEMA
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest == full_atlas.manifest and manifest["format"] == FORMAT
    _, record = corpus_bytes(corpus_uri, "train")
    corpus = manifest["corpus"]
    for key in ("uri", "split", "fingerprint", "n_docs", "n_bytes", "heldout_fraction"):
        assert corpus[key] == record[key], key
    assert manifest["config"] == KEEP_ALL.to_dict()
    assert manifest["config_hash"] == KEEP_ALL.config_hash()
    assert set(manifest["versions"]) >= {"python", "ray", "pyarrow", "duckdb", "numpy"}
    assert manifest["build_seconds"] > 0 and manifest["created"]
    ref = reference_count(train_docs(corpus_uri, KEEP_ALL), KEEP_ALL)
    for stratum in STRATA:
        s = manifest["strata"][stratum]
        assert s["distinct_total"] == s["kept"] == len(ref.strata[stratum])
        assert (
            s["tokens_total"] == s["tokens_kept"] == sum(c for c, _ in ref.strata[stratum].values())
        )
        assert (
            s["coverage"] == 1.0 and s["min_count"] == 1 and s["quota"] == KEEP_ALL.quotas[stratum]
        )


@pytest.mark.ray
def test_builtin_tiny_equals_the_reference(ray_session, tmp_path) -> None:
    cfg = AtlasConfig(target_size=10**9, min_count=1)
    environ = dict(os.environ)
    result = build_atlas("builtin:tiny", tmp_path / "tiny", cfg, progress=False)
    assert dict(os.environ) == environ  # the build's Ray Data settings are its own
    ref = reference_count(train_docs("builtin:tiny", cfg), cfg)
    got = read_atlas(result.path)
    for stratum in STRATA:
        assert [(r["gram"], r["count"], r["doc_freq"]) for r in got[stratum]] == ranked(
            ref.strata[stratum]
        )


@pytest.mark.ray
def test_selection_respects_quotas_and_min_count(ray_session, corpus_uri, tmp_path) -> None:
    # Two buckets: each holds more candidates than the target, so buckets truncate too.
    cfg = AtlasConfig(
        target_size=50, quota_char=0.5, quota_word=0.3, quota_unicode=0.2, partitions=2
    )
    result = build_atlas(corpus_uri, tmp_path / "small", cfg, progress=False)
    ref = reference_count(train_docs(corpus_uri, cfg), cfg)
    got, strata = read_atlas(result.path), result.manifest["strata"]
    candidates = {s: [r for r in ranked(ref.strata[s]) if r[1] >= 2] for s in STRATA}
    budgets = allocate_budgets(50, cfg.quotas, {s: len(candidates[s]) for s in STRATA})
    assert sum(budgets.values()) <= 50
    for stratum in STRATA:
        rows = got[stratum]
        assert [(r["gram"], r["count"], r["doc_freq"]) for r in rows] == (
            candidates[stratum][: budgets[stratum]]
        )
        assert strata[stratum]["kept"] == len(rows) == budgets[stratum] == strata[stratum]["budget"]
        assert all(r["count"] >= 2 for r in rows)
        assert strata[stratum]["tokens_kept"] == sum(r["count"] for r in rows)
    # Few unicode candidates: the unused share went to the others, up to the target.
    assert len(candidates["unicode"]) < 10 and sum(budgets.values()) == 50


@pytest.mark.ray
def test_rebuild_is_detected_refused_or_overwritten(ray_session, corpus_uri, tmp_path) -> None:
    out = tmp_path / "atlas"
    first = build_atlas(corpus_uri, out, KEEP_ALL, progress=False)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    again = build_atlas(corpus_uri, out, KEEP_ALL.replace(partitions=5), progress=False)
    assert again.already_built and not first.already_built
    assert again.manifest == first.manifest and (out / "manifest.json").stat().st_mtime_ns == stamp
    other = KEEP_ALL.replace(min_count=2)
    with pytest.raises(FileExistsError, match="another config.*--overwrite"):
        build_atlas(corpus_uri, out, other, progress=False)
    replaced = build_atlas(corpus_uri, out, other, overwrite=True, progress=False)
    assert replaced.manifest["config_hash"] == other.config_hash() != first.manifest["config_hash"]
    assert json.loads((out / "manifest.json").read_text())["config"]["min_count"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]


@pytest.mark.ray
def test_cli_build(ray_session, corpus_uri, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["atlas", "build", "--corpus", corpus_uri, "--out", str(out), "--target-size", "1k"]
    assert main([*args, "--quotas", "char=0.5,word=0.5,unicode=0", "--min-count", "1"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["target_size"] == 1000 and manifest["strata"]["unicode"]["kept"] == 0
    assert "coverage" in capsys.readouterr().out  # the summary table
    assert main([*args, "--quotas", "char=0.5,word=0.5,unicode=0", "--min-count", "1"]) == 0
    assert main([*args]) == 2
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.ray
@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "corpus file not found"),
        ("empty", "no documents"),
        ("not an atlas", "is not an atlas"),
    ],
)
def test_bad_input_leaves_nothing_behind(ray_session, tmp_path, case: str, expected: str) -> None:
    (tmp_path / "empty.txt").write_text("")
    uri = {"missing": f"file:{tmp_path}/nope.txt", "empty": f"file:{tmp_path}/empty.txt"}
    out = tmp_path / "out" / "atlas"
    if case == "not an atlas":
        out.mkdir(parents=True)
        (out / "keep.txt").write_text("mine")
    before = sorted(tmp_path.rglob("*"))
    error = FileExistsError if case == "not an atlas" else CorpusError
    with pytest.raises(error, match=expected):
        build_atlas(uri.get(case, "builtin:tiny"), out, overwrite=True, progress=False)
    assert sorted(tmp_path.rglob("*")) == before  # no DIR, no DIR.tmp-*, no parents


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--quotas", "char=0.5,word=0.5"], "--quotas: .*missing unicode"),
        (["--quotas", "char=a,word=0.5,unicode=0"], "--quotas: .*'a' is not a number"),
        (["--quotas", "char=0.5,word=0.6,unicode=0"], "quotas must sum to 1"),
        (["--target-size", "12.9Q"], "--target-size: malformed size"),
        (["--min-count", "0"], "argument --min-count: must be >= 1, got 0"),
        (["--block-bytes", "4MB"], "argument --block-bytes: malformed size"),
        (["--heldout-fraction", "1"], r"argument --heldout-fraction: must be in \[0, 1\)"),
    ],
)
def test_cli_rejects_malformed_flags(tmp_path, capsys, flags, expected) -> None:
    out = tmp_path / "x"
    assert main(["atlas", "build", "--corpus", "builtin:tiny", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("geolip: error:")
    assert re.search(expected, err), err
    assert not out.exists()


# --- no Ray below -------------------------------------------------------------------------------


def test_parse_size_and_quotas() -> None:
    assert parse_size("12.9M") == 12_900_000 and parse_size("500k") == 500_000
    assert parse_size("2G") == 2 * 10**9 and parse_size("1e6") == 10**6 and parse_size("42") == 42
    for bad in ("", "M", "1.5", "-3", "12.9Q", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_quotas("char=0.35, word=0.6 ,unicode=0.05") == {
        "char": 0.35,
        "word": 0.6,
        "unicode": 0.05,
    }
    for bad in ("char=1", "char=0.5,word=0.5,unicode=0,char=0", "chars=1,word=0,unicode=0"):
        with pytest.raises(ValueError, match="malformed quotas"):
            parse_quotas(bad)


def test_config_validation_and_hash() -> None:
    cfg = AtlasConfig()
    assert cfg.config_hash() == AtlasConfig(block_bytes=1 << 20, partitions=7).config_hash()
    assert cfg.config_hash() != AtlasConfig(min_count=3).config_hash()
    assert AtlasConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg
    bad = [
        (dict(char_orders=()), "char_orders must be a non-empty"),
        (dict(unicode_orders=(1, 4)), "between 1 and 3"),
        (dict(word_orders=(2, 1)), "strictly increasing"),
        (dict(quota_char=0.5), "quotas must sum to 1"),
        (dict(quota_word=-0.1, quota_char=1.05), r"quota_char must be in \[0, 1\]"),
        (dict(target_size=0), "target_size must be a positive integer"),
        (dict(split="test"), "split must be one of"),
        (dict(heldout_fraction=1.0), "heldout_fraction"),
    ]
    for changes, message in bad:
        with pytest.raises(ValueError, match=message):
            AtlasConfig(**changes)


def test_allocate_budgets_hands_on_unused_shares() -> None:
    quotas = {"char": 0.35, "word": 0.6, "unicode": 0.05}
    assert allocate_budgets(100, quotas, {"char": 1000, "word": 1000, "unicode": 1000}) == {
        "char": 35,
        "word": 60,
        "unicode": 5,
    }
    small = allocate_budgets(100, quotas, {"char": 10, "word": 1000, "unicode": 0})
    assert small == {"char": 10, "word": 90, "unicode": 0}
    assert allocate_budgets(100, quotas, {"char": 3, "word": 4, "unicode": 5}) == {
        "char": 3,
        "word": 4,
        "unicode": 5,
    }
    assert allocate_budgets(
        10, {"char": 1.0, "word": 0.0, "unicode": 0.0}, {"char": 5, "word": 9, "unicode": 9}
    ) == {
        "char": 5,
        "word": 0,
        "unicode": 0,
    }


def test_gram_text_escapes_only_invalid_grams() -> None:
    grams = [b"the ", "日本".encode(), b"\xe6\x97", b"", b"a\xffb", b"\x00", "é".encode()[:1]]
    array = pa.array(grams, pa.binary()).slice(0)
    assert invalid_utf8(array.cast(pa.large_binary())).tolist() == [
        False,
        False,
        True,
        False,
        True,
        False,
        True,
    ]
    assert gram_text(array).to_pylist() == [g.decode("utf-8", "backslashreplace") for g in grams]
    assert gram_text(array).type == pa.string()


def test_invalid_utf8_text_files_keep_their_bytes(tmp_path) -> None:
    raw = b"caf\xe9 \xe2\x82 \xff the end\n"
    (tmp_path / "latin.txt").write_bytes(raw)
    data, record = corpus_bytes(f"file:{tmp_path}/latin.txt", "train", heldout_fraction=0)
    assert data == raw and record["n_bytes"] == len(raw)


def test_existing_atlas_is_checked_without_ray_or_staging(corpus_uri, tmp_path) -> None:
    """An atlas of the same config at ``out``: the split's fingerprint (hashed as it streams,
    equal to ``corpus_bytes``') decides between "already built" and a refusal; neither starts
    Ray (no ``init_ray``, none running) nor writes anything."""
    from atlas_testdata import write_atlas

    out = write_atlas(tmp_path / "atlas")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["config_hash"] = KEEP_ALL.config_hash()
    manifest["unicode_invalid_bytes"] = 0  # what the summary table needs of a real manifest
    for stratum, record in manifest["strata"].items():
        record["orders"] = list(KEEP_ALL.orders(stratum))
    (out / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(FileExistsError, match="other corpus data.*--overwrite"):
        build_atlas(corpus_uri, out, KEEP_ALL, progress=False)
    assert sorted(tmp_path.rglob("*")) == before
    _, record = corpus_bytes(corpus_uri, KEEP_ALL.split, KEEP_ALL.heldout_fraction)
    manifest["corpus"]["fingerprint"] = record["fingerprint"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = build_atlas(corpus_uri, out, KEEP_ALL, progress=False)
    assert result.already_built and result.manifest == manifest
    assert sorted(tmp_path.rglob("*")) == before
