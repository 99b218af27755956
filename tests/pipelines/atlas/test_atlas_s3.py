"""``atlas build --out s3://...`` on a real local Ray and a real S3-compatible server (moto's, on
127.0.0.1), read back by ``atlas query`` / ``atlas stats`` / ``bank build --atlas``: the same
answers as the same build on a local directory, nothing but the published atlas in the bucket."""

from __future__ import annotations

import json

import numpy as np
import pytest
from s3 import s3_server, use_server

from pipelines.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SQL = "SELECT stratum, text, n, count, doc_freq, rank FROM atlas ORDER BY stratum, rank"
ATLAS_KEYS = [
    "atlas/grams/stratum=char/part-0.parquet",
    "atlas/grams/stratum=unicode/part-0.parquet",
    "atlas/grams/stratum=word/part-0.parquet",
    "atlas/manifest.json",
]


@pytest.fixture(scope="module")
def server():
    with s3_server() as srv:
        yield srv


def _json(capsys, argv: list[str]):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _bank(path) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(path))["trigrams"]


def test_build_to_s3_reads_back_as_the_local_build(
    server, ray_session, monkeypatch, tmp_path, capsys
):
    s3 = use_server(monkeypatch, server, tmp_path / "cache")
    uri, local = f"s3://{s3.bucket}/atlas", str(tmp_path / "local")
    build = ["atlas", "build", "--corpus", "builtin:tiny", "--quiet", "--out"]
    assert main([*build, local]) == 0
    assert main([*build, uri]) == 0
    assert s3.keys() == ATLAS_KEYS  # the atlas and nothing else: no staging, no half result

    query = ["atlas", "query", "--format", "json"]
    assert _json(capsys, [*query, uri, SQL]) == _json(capsys, [*query, local, SQL])
    remote_stats = _json(capsys, ["atlas", "stats", uri, "--json"])
    local_stats = _json(capsys, ["atlas", "stats", local, "--json"])
    assert remote_stats["atlas"] == uri and remote_stats["strata"] == local_stats["strata"]

    bank = ["bank", "build", "--size", "64"]
    assert main([*bank, "--atlas", uri, "--out", str(tmp_path / "remote.safetensors")]) == 0
    assert main([*bank, "--atlas", local, "--out", str(tmp_path / "local.safetensors")]) == 0
    np.testing.assert_array_equal(
        _bank(tmp_path / "remote.safetensors"), _bank(tmp_path / "local.safetensors")
    )
    capsys.readouterr()

    # The same build again is recognised; another config is refused without --overwrite.
    manifest = s3.client().get_object(Bucket=s3.bucket, Key="atlas/manifest.json")["Body"].read()
    assert main([*build, uri]) == 0
    assert main([*build, uri, "--min-count", "3"]) == 2
    err = capsys.readouterr().err
    assert f"--out {uri} holds an atlas built with another config" in err and "--overwrite" in err
    after = s3.client().get_object(Bucket=s3.bucket, Key="atlas/manifest.json")["Body"].read()
    assert after == manifest and s3.keys() == ATLAS_KEYS

    # --overwrite replaces it; readers see the new atlas (a new cache key), not the cached one.
    assert main([*build, uri, "--min-count", "3", "--overwrite"]) == 0
    assert s3.keys() == ATLAS_KEYS
    assert main([*build, local, "--min-count", "3", "--overwrite"]) == 0
    assert _json(capsys, [*query, uri, SQL]) == _json(capsys, [*query, local, SQL])


def test_a_failing_build_leaves_the_bucket_as_it_was(
    server, ray_session, monkeypatch, tmp_path, capsys
):
    s3 = use_server(monkeypatch, server, tmp_path / "cache")
    before = s3.keys()
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    uri = f"s3://{s3.bucket}/failed"
    assert main(["atlas", "build", "--corpus", f"file:{empty}", "--out", uri, "--quiet"]) == 2
    assert "no documents" in capsys.readouterr().err
    assert s3.keys() == before
    # A prefix holding something that is not an atlas is never built into.
    s3.client().put_object(Bucket=s3.bucket, Key="other/readme.txt", Body=b"mine")
    other = f"s3://{s3.bucket}/other"
    argv = ["atlas", "build", "--corpus", "builtin:tiny", "--out", other, "--quiet", "--overwrite"]
    assert main(argv) == 2
    assert f"--out {other} exists and is not an atlas" in capsys.readouterr().err
    assert s3.keys("other/") == ["other/readme.txt"]
