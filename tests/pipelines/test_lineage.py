"""Atlas and bank builds as MLflow runs of ``geolip-data`` (``pipelines.lineage``), through the
commands a user runs; real local Ray for the atlas, a real SQLite MLflow store under tmp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.lineage import BUILD_RUN_TAG, DATA_EXPERIMENT
from pipelines.tracking import default_tracking_uri

pytestmark = pytest.mark.ray


def _runs(uri: str, kind: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(DATA_EXPERIMENT)
    return client, client.search_runs([experiment.experiment_id], f"tags.`geolip.kind` = '{kind}'")


def test_atlas_and_bank_builds_are_runs_with_their_manifests(ray_session, tmp_path, capsys):
    data, atlas = tmp_path / "data", tmp_path / "atlas"
    build = ["atlas", "build", "--corpus", "builtin:tiny", "--out", str(atlas), "--quiet"]
    build += ["--target-size", "2k", "--data-dir", str(data)]
    assert main(build) == 0
    assert "recorded in MLflow" in capsys.readouterr().out
    uri = default_tracking_uri(data)
    client, [atlas_run] = _runs(uri, "atlas")
    manifest = json.loads((atlas / "manifest.json").read_text())
    path = client.download_artifacts(atlas_run.info.run_id, "manifest.json")
    logged = json.loads(Path(path).read_text())
    assert logged == manifest
    assert atlas_run.data.tags["geolip.path"] == str(atlas.resolve())
    assert atlas_run.data.tags["geolip.config_hash"] and atlas_run.info.status == "FINISHED"
    assert atlas_run.data.tags["mlflow.source.name"] == "geolip atlas build"
    # The same atlas again is the same build: recorded once.
    assert main(build) == 0
    _, again = _runs(uri, "atlas")
    assert [r.info.run_id for r in again] == [atlas_run.info.run_id]
    bank = tmp_path / "bank.safetensors"
    cut = ["bank", "build", "--atlas", str(atlas), "--size", "64", "--out", str(bank)]
    assert main([*cut, "--data-dir", str(data)]) == 0
    _, [bank_run] = _runs(uri, "bank")
    [read] = bank_run.inputs.dataset_inputs
    tags = {t.key: t.value for t in read.tags}
    assert read.dataset.name == atlas.name and tags[BUILD_RUN_TAG] == atlas_run.info.run_id
    assert tags["mlflow.data.context"] == "build"
    assert bank_run.data.metrics["rows"] == 64


def test_builds_without_a_store_record_nothing(ray_session, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    atlas = tmp_path / "atlas"
    argv = ["atlas", "build", "--corpus", "builtin:tiny", "--out", str(atlas), "--quiet"]
    assert main([*argv, "--target-size", "2k"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]


def _log_corpus(uri: str, data: str, run_id: str, start) -> None:
    from pipelines.lineage import Input, log_inputs
    from pipelines.tracking import client

    client(uri).get_run(run_id)  # the store opened (cached per process) before the start
    start.wait()  # every process inserts the same new dataset at once
    item = Input("corpus", "builtin:race", "d1g3st", "builtin:race", {"train_bytes": 1})
    log_inputs(uri, Path(data), run_id, [item], "train")


def test_trials_starting_together_each_link_the_same_new_dataset(tmp_path):
    """Sweep trials start together and log the same corpus: MLflow's look-up-then-insert of the
    dataset races between processes (a UNIQUE constraint on SQLite); each still links it."""
    import multiprocessing as mp

    from pipelines.tracking import client, ensure_experiment, start_run

    uri = default_tracking_uri(tmp_path)
    experiment = ensure_experiment(uri, "race", str(tmp_path / "artifacts"))
    runs = [start_run(uri, experiment, f"trial-{i}").run_id for i in range(6)]
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(len(runs))
    procs = [ctx.Process(target=_log_corpus, args=(uri, str(tmp_path), r, start)) for r in runs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(runs)
    for run_id in runs:
        (ds,) = client(uri).get_run(run_id).inputs.dataset_inputs
        assert ds.dataset.name == "builtin:race" and ds.dataset.digest == "d1g3st"
