"""``features extract --out s3://...`` with the real MiniLM-L6 host on a real local Ray and a
real S3-compatible server (moto's, on 127.0.0.1): the shards and their manifest land in the
bucket (the manifest written last), read back as the same vectors, and are not re-extracted."""

from __future__ import annotations

import json

import numpy as np
import pytest
from s3 import s3_server, use_server

from pipelines.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_extract_to_s3_round_trips(ray_session, monkeypatch, tmp_path, capsys):
    from pipelines.features.extract import load_vectors
    from pipelines.storage import readable

    with s3_server() as server:
        s3 = use_server(monkeypatch, server, tmp_path / "cache")
        uri = f"s3://{s3.bucket}/feat"
        argv = ["features", "extract", "--corpus", "builtin:tiny", "--max-sentences", "16"]
        assert main([*argv, "--out", uri]) == 0
        assert capsys.readouterr().out.rstrip().endswith(f"-> {uri}")
        keys = s3.keys()
        assert "feat/manifest.json" in keys
        assert {k.split("/")[1] for k in keys} == {"manifest.json", "train", "validation"}
        assert all(k.endswith(".parquet") for k in keys if k != "feat/manifest.json")

        copy = readable(uri, "--data")
        manifest = json.loads((copy / "manifest.json").read_text())
        train = load_vectors(copy / "train")
        assert train.shape == (manifest["splits"]["train"]["tokens"], 384)
        np.testing.assert_allclose(manifest["standardize"]["mean"], train.mean(0), atol=1e-5)

        from pipelines.svae.data import load_svae_data

        data = load_svae_data(f"features:{uri}")  # what train svae reads
        assert data.source["host"]["hidden_size"] == 384 and data.source["dir"] == str(copy)
        assert data.train.shape[0] == manifest["splits"]["train"]["tokens"]

        assert main([*argv, "--out", uri]) == 0  # the same request: recognised, not redone
        assert "already extracted: " + uri in capsys.readouterr().out
        assert s3.keys() == keys
        assert main([*argv[:-1], "8", "--out", uri]) == 2  # another request needs --overwrite
        assert "holds other features" in capsys.readouterr().err and s3.keys() == keys
