"""``geolip atlas query|stats`` and ``geolip bank build|stats`` on atlases written by the tests."""

from __future__ import annotations

import argparse
import csv
import io
import json

import numpy as np
import pytest
from atlas_testdata import reference_counts, write_atlas

from pipelines.atlas.cli import size_flag
from pipelines.cli import main


@pytest.fixture(scope="module")
def atlas_dir(tmp_path_factory):
    return write_atlas(tmp_path_factory.mktemp("cli") / "atlas")


def _top_words(k: int) -> list[tuple[str, int]]:
    word = reference_counts()["word"][0]
    return [(g.decode(), c) for g, c in sorted(word.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


SQL = "SELECT gram, count FROM atlas_word ORDER BY count DESC, gram LIMIT 4"


def test_query_csv(atlas_dir, capsys):
    assert main(["atlas", "query", str(atlas_dir), SQL, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["gram", "count"]
    assert [(g, int(c)) for g, c in rows[1:]] == _top_words(4)


def test_query_json_with_limit_and_hugeint(atlas_dir, capsys):
    sql = "SELECT stratum, sum(count) AS tokens FROM atlas GROUP BY stratum ORDER BY stratum"
    assert main(["atlas", "query", str(atlas_dir), sql, "--format", "json", "--limit", "2"]) == 0
    captured = capsys.readouterr()
    ref = reference_counts()
    expected = [
        {"stratum": s, "tokens": sum(ref[s][0].values())} for s in sorted(ref)[:2]
    ]  # char, unicode
    assert json.loads(captured.out) == expected
    assert "cut at --limit 2" in captured.err


def test_query_table(atlas_dir, capsys):
    assert main(["atlas", "query", str(atlas_dir), SQL]) == 0
    out = capsys.readouterr().out
    for word, count in _top_words(4):
        assert word.strip() in out and str(count) in out
    assert "4 rows" in out


def test_query_errors_are_one_line(atlas_dir, tmp_path, capsys):
    cases = [
        ([str(atlas_dir), "SELEC 1"], "invalid SQL"),
        ([str(atlas_dir), "COPY (SELECT 1) TO 'x.csv'"], "read-only"),
        ([str(tmp_path / "nope"), "SELECT 1"], "does not exist"),
    ]
    for args, message in cases:
        assert main(["atlas", "query", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("geolip: error:") and message in err and err.count("\n") == 1


def test_stats_table_and_json(atlas_dir, capsys):
    assert main(["atlas", "stats", str(atlas_dir)]) == 0
    out = capsys.readouterr().out
    assert "top 10 word" in out and "unicode" in out
    assert main(["atlas", "stats", str(atlas_dir), "--json", "--top", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [t["gram"] for t in data["strata"]["word"]["top"]] == [w for w, _ in _top_words(3)]


@pytest.mark.parametrize(
    ("text", "value"),
    [("8192", 8192), ("64k", 64_000), ("64Ki", 65_536), ("8K", 8_000), ("1Mi", 2**20)],
)
def test_size_flag_is_atlas_config_parse_size(text, value):
    """One meaning of a size in every flag: k, M, G decimal; Ki, Mi, Gi binary."""
    assert size_flag(text) == value


@pytest.mark.parametrize("text", ["", "0", "-3", "1.5", "64kb", "64x", "big"])
def test_size_flag_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError):
        size_flag(text)


@pytest.mark.parametrize(
    ("command", "flags"),
    [("atlas build", ("--target-size", "--block-bytes")), ("bank build", ("--size",))],
)
def test_size_flags_state_their_units(command, flags, capsys):
    assert main([*command.split(), "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help lines
    assert text.count("64k = 64000, 64Ki = 65536") == len(flags)
    for flag in flags:
        assert flag in text


def test_bank_build_then_stats_with_coverage(atlas_dir, tmp_path, capsys):
    from geolip.aleph.bank import load_bank

    out = tmp_path / "bank.safetensors"
    args = ["bank", "build", "--atlas", str(atlas_dir), "--size", "64", "--out", str(out)]
    assert main([*args, "--quotas", "char=0.5,word=0.5"]) == 0
    assert "64 trigrams" in capsys.readouterr().out
    bank = load_bank(out)
    assert bank.size == 64 and bank.provenance["quotas"]["word"] == 0.5

    before = out.read_bytes()
    assert main(args) == 2  # exists, no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0
    capsys.readouterr()

    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat.\n" * 40)
    stats_args = ["bank", "stats", str(out), "--corpus", f"file:{corpus}", "--json"]
    assert main(stats_args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["size"] == 64 and 0 < data["coverage"]["coverage"] <= 1
    assert main(["bank", "stats", str(out), "--corpus", f"file:{corpus}"]) == 0
    assert "coverage on" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--size", "100k"], "larger than the"),
        (["--size", "16", "--quotas", "char=0.9"], "sum to 1"),
        (["--size", "16", "--quotas", "chars=1"], "unknown stratum"),
    ],
)
def test_bank_build_errors_leave_no_file(atlas_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "bank.safetensors"
    assert main(["bank", "build", "--atlas", str(atlas_dir), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bank_build_corrupt_atlas_leaves_no_file(tmp_path, capsys):
    atlas = write_atlas(tmp_path / "atlas")
    (atlas / "grams" / "stratum=unicode" / "part-00000.parquet").write_bytes(b"PAR1garbage")
    out = tmp_path / "banks" / "bank.safetensors"
    assert main(["bank", "build", "--atlas", str(atlas), "--size", "8", "--out", str(out)]) == 2
    assert "stratum=unicode/part-00000.parquet is not readable Parquet" in capsys.readouterr().err
    assert not out.parent.exists()


def test_bank_build_refuses_validation_atlas(tmp_path, capsys):
    atlas = write_atlas(tmp_path / "atlas", split="validation")
    out = tmp_path / "b.safetensors"
    base = ["bank", "build", "--atlas", str(atlas), "--size", "8", "--out", str(out)]
    assert main(base) == 2
    assert "training split only" in capsys.readouterr().err
    assert main([*base, "--allow-split"]) == 0
    assert np.asarray(load_rows(out)).shape == (8, 3)


def load_rows(path):
    from atlas.bank import read_bank_file

    return read_bank_file(path)[0]
