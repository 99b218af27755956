"""``geolip train svae`` end to end on real Ray Train and a real MLflow store (tiny budgets)."""

from __future__ import annotations

import json

import pytest

from geolip.svae.checkpoint import load_svae_checkpoint
from pipelines.cli import main
from pipelines.errors import GeolipError

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_structured_images_train_with_control_and_verdict(tmp_path, ray_session, capsys):
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import default_tracking_uri

    argv = [
        "train",
        "svae",
        "--data",
        "images:structured",
        "--data-dir",
        str(tmp_path),
        "--set",
        "train.steps=30",
        "--set",
        "train.eval_every=15",
        "--set",
        "train.batch_size=32",
        "--register",
        "tiny-svae",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "checkpoint:" in out and "registered as models:/tiny-svae/1" in out
    [final] = list((tmp_path / "runs" / "svae").glob("*/final"))
    verdict = json.loads((final / "verdict.json").read_text())
    assert verdict["mechanism"] in ("A", "B", "indeterminate")
    assert verdict["control"]["mechanism"] in ("A", "B", "indeterminate")
    assert 0 < verdict["alpha_final"] < 0.2 and verdict["lens_isometry_err"] < 1e-4
    assert -1 <= verdict["recon_cos_external"] <= 1
    names = ("model.safetensors", "config.json", "meta.json", "host_config.json", "verdict.json")
    assert sorted(p.name for p in final.iterdir()) == sorted(names)
    model, geo, meta = load_svae_checkpoint(final)  # the shared layout: family, hash, shapes
    assert meta["family"] == "svae" and meta["steps"] == 30 and model.cfg == geo
    assert json.loads((final / "verdict.json").read_text()) == verdict
    client = MlflowClient(default_tracking_uri(tmp_path))
    exp = client.get_experiment_by_name("geolip-svae")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["mechanism"] == verdict["mechanism"]
    assert "cos_ext" in run.data.metrics and "control/cos_ext" in run.data.metrics
    assert "system/node_0/cpu_utilization_percentage" in run.data.metrics  # the node's use
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {
        "plots/omega.png",
        "plots/alpha.png",
        "plots/deviation_hist.png",
        "plots/reconstructions.png",
    } <= plots
    _check_logged_model(client, run, model, tmp_path)


def _check_logged_model(client, run, model, data) -> None:
    """The registered pyfunc reconstructs as the checkpoint's model does; the run records
    its config, hash and source."""
    import mlflow.pyfunc
    import numpy as np
    import torch

    from pipelines.tracking import default_tracking_uri, fluent_store

    assert run.data.tags["mlflow.source.name"] == "geolip train svae"
    assert run.data.tags["geolip.config_hash"]
    [read] = run.inputs.dataset_inputs  # the tensors both fits read, by their bytes' digest
    assert read.dataset.name == "images:structured" and len(read.dataset.digest) == 16
    [output] = run.outputs.model_outputs
    assert client.get_logged_model(output.model_id).source_run_id == run.info.run_id
    with fluent_store(default_tracking_uri(data)):
        pyfunc = mlflow.pyfunc.load_model("models:/tiny-svae/1")
    torch.manual_seed(0)
    g = model.cfg
    x = torch.rand(2, g.channels, g.img_size, g.img_size)
    got = pyfunc.predict(x.numpy())
    with torch.no_grad():
        want = model(x)["external_recon"].numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_bad_data_spec_is_refused(tmp_path):
    from pipelines.svae.data import load_svae_data

    with pytest.raises(GeolipError, match="features:DIR, images:structured or text"):
        load_svae_data("pictures:nice")
    with pytest.raises(GeolipError, match="no feature manifest"):
        load_svae_data(f"features:{tmp_path}")


def test_stopped_run_resumes_and_restarts_continue_exactly(tmp_path, ray_session):
    """A fit killed after its step-10 checkpoint: with ``max_failures=0`` the run fails, then
    ``--resume`` continues the same MLflow run; with ``max_failures=1`` Ray Train restarts it.
    Both end with the weights of an uninterrupted run (batches are seeded by step), as does the
    fit trained in this process (a sweep trial's engine), resumed there from its checkpoint."""
    import dataclasses

    import torch
    from mlflow.tracking import MlflowClient
    from safetensors.torch import load_file

    from pipelines.runtime import RunContext
    from pipelines.svae.data import run_config
    from pipelines.svae.driver import SVAEJob, train_svae_job
    from pipelines.tracking import default_tracking_uri

    sets = ("train.steps=20", "train.eval_every=10", "train.batch_size=16")
    weights = {}
    for case in ("stopped", "restarted", "plain", "in-process"):
        faulty = case in ("stopped", "restarted")
        fault = {"step": 10, "marker": str(tmp_path / f"{case}.fault")} if faulty else None
        ctx = RunContext.create(
            "geolip-svae", tmp_path / case, fault=fault, max_failures=int(case == "restarted")
        ).replace(in_process=case == "in-process")
        spec = "images:structured"
        job = SVAEJob(spec, run_config(spec, sets), ctx, control=False)
        if case == "stopped":
            with pytest.raises(GeolipError, match="failed"):
                train_svae_job(job, progress=lambda s: None)
            with pytest.raises(GeolipError, match="--resume"):
                train_svae_job(
                    dataclasses.replace(job, ctx=ctx.replace(fault=None)), progress=lambda s: None
                )
            job = dataclasses.replace(job, ctx=ctx.replace(fault=None, resume=True))
        out = train_svae_job(job, progress=lambda s: None)
        if case == "in-process":  # resumed: from its newest checkpoint, the finished state again
            assert len(list((tmp_path / case / "ray_results").glob("*/checkpoint_*"))) == 2
            again = train_svae_job(
                dataclasses.replace(job, ctx=ctx.replace(resume=True)), progress=lambda s: None
            )
            assert again["run_id"] == out["run_id"]
        weights[case] = load_file(str(out["checkpoint"] / "model.safetensors"))
        client = MlflowClient(default_tracking_uri(tmp_path / case))
        run = client.get_run(out["run_id"])
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(out["run_id"], "cos_ext")]
        assert max(steps) == 20 and 10 in steps
        if fault:
            assert (tmp_path / f"{case}.fault").exists()  # the worker really died
        if case == "stopped":
            assert run.data.tags["resumed"] == "true"
            assert len(client.search_runs([run.info.experiment_id])) == 1  # the same run
        engine = "in-process" if case == "in-process" else "ray-train"
        assert run.data.params["job.engine"] == engine
    for case in ("stopped", "restarted", "in-process"):
        for key, value in weights["plain"].items():
            assert torch.equal(weights[case][key], value), (case, key)
