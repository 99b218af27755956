"""``geolip train aleph`` end to end: real local Ray Train, real MLflow SQLite store under tmp.

Each fit of the tiny model costs ~20-40 s here (Train controller, worker group, Ray Data split),
so every fit is shared by as many checks as possible.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from geolip.aleph.bank import load_bank
from geolip.paired import bits_per_byte
from pipelines.aleph.driver import train_aleph
from pipelines.aleph.heldout import read_target_nll
from pipelines.aleph.job import TrainJob
from pipelines.errors import GeolipError
from pipelines.runtime import RunContext
from pipelines.scales import get_scale

pytestmark = [pytest.mark.ray, pytest.mark.slow]
CORPUS = "builtin:python-docs"
TINY = ("train.steps=12", "train.log_every=4", "train.batch_size=4", "train.eval_windows=8")


@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_session) -> Path:
    return tmp_path_factory.mktemp("train-data")


def _job(data: Path, sets=TINY, workers=1, max_failures=2, fault=None, **kw) -> TrainJob:
    """A tiny pmix run with ``sets`` (``--set`` syntax, parsed as the CLI parses it)."""
    ctx = RunContext.create(
        "geolip-aleph", data, workers=workers, max_failures=max_failures, threads=1, fault=fault
    )
    run = get_scale("tiny").run_config("pmix", sets)
    return TrainJob(run=run, corpus=CORPUS, ctx=ctx, eval_bytes=30_000, **kw)


def _again(job: TrainJob, **ctx_changes) -> TrainJob:
    return dataclasses.replace(job, ctx=job.ctx.replace(**ctx_changes))


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _steps(uri: str, run_id: str, key: str) -> list[int]:
    return [m.step for m in sorted(_client(uri).get_metric_history(run_id, key), key=_order)]


def _order(m):
    return (m.timestamp, m.step)


def _assert_resumed_at_checkpoint(steps: list[int]) -> None:
    """Steps 1-10 all logged; only those after the step-4 checkpoint (5, 6) may repeat.

    Whether 5 and 6 appear twice depends on the crash: metrics are logged in batches, and a rank
    killed outright never flushes the ones it buffered since its last checkpoint.
    """
    assert sorted(set(steps)) == list(range(1, 11))
    repeated = {s for s in steps if steps.count(s) > 1}
    assert repeated <= {5, 6}
    assert steps[-6:] == [5, 6, 7, 8, 9, 10]  # the last attempt started after step 4


def test_two_workers_train_log_and_evaluate_like_the_library(data: Path) -> None:
    from geolip.aleph.bpb import bpb_windowed
    from geolip.aleph.checkpoint import load_checkpoint
    from pipelines.cli import main

    out = train_aleph(_job(data, workers=2), progress=lambda s: None)
    client = _client(out.tracking_uri)
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == out.name
    assert out.tracking_uri.startswith("sqlite:////") and str(data) in out.tracking_uri
    params = run.data.params
    assert params["config.model.head.kind"] == "pmix" and params["config.train.steps"] == "12"
    assert params["job.workers"] == "2"
    tags = run.data.tags
    assert tags["head"] == "pmix" and tags["seed"] == "0" and tags["arm"] == "free"
    assert tags["bank"].endswith("(N=512)")
    # The default lineage: the bank was cut from the corpus' atlas, built under the data dir.
    assert tags["bank_source"] == "atlas"
    [bank_file] = (data / "banks").glob("*-n512-default.safetensors")
    prov = load_bank(bank_file).provenance
    assert Path(prov["atlas"]).parent == data / "atlases" and prov["size"] == 512
    assert _steps(out.tracking_uri, out.run_id, "bpb") == [4, 8, 12]
    metrics = run.data.metrics
    for key in (
        "val_bpb",
        "lr",
        "tokens_per_s",
        "coverage",
        "gate_acc",
        "inbank_nll",
        "gauge/dev",
        "gauge/erank",
        "heldout_bpb_windowed",
        "heldout_bpb_streamed",
    ):
        assert key in metrics, key
    # System metrics: one monitor for the node its two workers share, named by node rank.
    system = [k for k in metrics if k.startswith("system/")]
    assert "system/node_0/cpu_utilization_percentage" in system
    assert "system/node_0/system_memory_usage_megabytes" in system
    assert all(k.startswith("system/node_0/") for k in system)
    artifacts = {a.path for a in client.list_artifacts(out.run_id)}
    assert {"checkpoint", "plots", "verdict.json"} <= artifacts
    plots = {a.path for a in client.list_artifacts(out.run_id, "plots")}
    assert {"plots/bpb_curves.png", "plots/gauge.png"} <= plots
    ckpt = {a.path for a in client.list_artifacts(out.run_id, "checkpoint")}
    assert "checkpoint/model.safetensors" in ckpt and "checkpoint/bank.safetensors" in ckpt
    # The run's held-out figures are the library's single-process evaluation of its checkpoint.
    model, run_cfg, meta = load_checkpoint(out.checkpoint)
    assert meta["step"] == 12 and meta["mlflow_run_id"] == out.run_id
    held = np.load(out.checkpoint.parent / "heldout.npy")
    assert bpb_windowed(model, held).bpb == pytest.approx(metrics["heldout_bpb_windowed"], abs=1e-9)
    # Each held-out target's NLL is in the run (what sweeps pair their Δ ± SE on): float32.
    nll = read_target_nll(out.tracking_uri, out.run_id)
    assert len(nll) == metrics["heldout_targets"] == len(held) // 3 - 1
    bpb = float(bits_per_byte(nll).mean())
    assert bpb == pytest.approx(metrics["heldout_bpb_windowed"], rel=1e-6)
    verdict = json.loads((out.checkpoint.parent / "verdict.json").read_text())
    assert verdict["final"]["heldout_bpb_windowed"] == metrics["heldout_bpb_windowed"]
    # `geolip eval aleph` scores the same held-out bytes and logs into the checkpoint's run.
    argv = [
        "eval",
        "aleph",
        str(out.checkpoint),
        "--corpus",
        CORPUS,
        "--data-dir",
        str(data),
        "--eval-bytes",
        "30000",
        "--no-compressors",
        "--no-kn",
        "--format",
        "json",
    ]
    assert main(argv) == 0
    logged = _client(out.tracking_uri).get_run(out.run_id).data.metrics
    assert logged["eval/bpb_windowed"] == pytest.approx(metrics["heldout_bpb_windowed"], abs=1e-9)
    # The same config and seed again is the same run: refused without --resume.
    with pytest.raises(GeolipError, match="already exists.*--resume"):
        train_aleph(_job(data, workers=2), progress=lambda s: None)
    # A warm start (--init-from, same architecture) begins where the donor ended, not from scratch.
    warm_job = _job(
        data, init_from=str(out.checkpoint), sets=(*TINY, "train.steps=4", "train.seed=7")
    )
    warm = train_aleph(warm_job, progress=lambda s: None)
    warm_run = client.get_run(warm.run_id)
    assert warm_run.data.tags["donor"] == str(out.checkpoint) and warm.name != out.name
    [cold_first] = [m.value for m in client.get_metric_history(out.run_id, "bpb") if m.step == 4]
    [warm_first] = [m.value for m in client.get_metric_history(warm.run_id, "bpb") if m.step == 4]
    assert warm_first < cold_first - 0.3


def test_two_workers_match_one_worker_at_the_same_global_batch(data: Path) -> None:
    """Replicated data: both ranks draw the global batch and keep their half; DDP averages."""
    steps = ("train.steps=3", "train.log_every=1", "train.batch_size=4", "train.eval_windows=8")
    losses = {}
    for workers in (1, 2):
        job = _job(data, workers=workers, sets=steps, data_mode="replicate")
        out = train_aleph(job, progress=lambda s: None)
        history = _client(out.tracking_uri).get_metric_history(out.run_id, "loss_main")
        losses[workers] = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert len(losses[1]) == 3
    np.testing.assert_allclose(losses[2], losses[1], rtol=2e-4)


def test_in_process_training_is_the_ray_train_run_without_its_workers(data: Path) -> None:
    """``ctx.in_process`` (a sweep's one-worker trial): the same losses, held-out figures and
    final weights as the Ray Train worker, its checkpoints under ``ray_results`` as Ray
    Train's, and ``--resume`` of the finished run reports it again from there."""
    from safetensors.torch import load_file

    sets = ("train.steps=8", "train.log_every=2", "train.batch_size=4", "train.eval_windows=8")
    outs = {}
    for engine, in_process in (("ray", False), ("proc", True)):
        job = _again(_job(data, sets=sets, run_name=f"engines-{engine}"), in_process=in_process)
        outs[engine] = train_aleph(job, progress=lambda s: None)
    ray_out, proc = outs["ray"], outs["proc"]
    uri = proc.tracking_uri
    losses = {k: [m.value for m in sorted(_client(uri).get_metric_history(o.run_id, "loss_main"),
                                          key=lambda m: m.step)] for k, o in outs.items()}  # fmt: skip
    assert len(losses["proc"]) == 4
    np.testing.assert_allclose(losses["proc"], losses["ray"], rtol=1e-6)
    for key in ("val_bpb", "heldout_bpb_windowed", "heldout_bpb_streamed"):
        assert proc.verdict["final"][key] == pytest.approx(ray_out.verdict["final"][key], rel=1e-6)
    weights = [load_file(str(o.checkpoint / "model.safetensors")) for o in (ray_out, proc)]
    for name, tensor in weights[0].items():
        np.testing.assert_allclose(weights[1][name].numpy(), tensor.numpy(), rtol=1e-5, atol=1e-7)
    run = _client(uri).get_run(proc.run_id)
    assert run.data.params["job.engine"] == "in-process" and run.info.status == "FINISHED"
    assert _client(uri).get_run(ray_out.run_id).data.params["job.engine"] == "ray-train"
    kept = sorted((data / "ray_results" / proc.name).glob("checkpoint_*"))
    assert len(kept) == 2 and all((c / "train_state.pt").is_file() for c in kept)
    again = _again(_job(data, sets=sets, run_name="engines-proc"), in_process=True, resume=True)
    resumed = train_aleph(again, progress=lambda s: None)
    assert resumed.run_id == proc.run_id
    assert resumed.verdict["final"]["val_bpb"] == pytest.approx(proc.verdict["final"]["val_bpb"])
    with pytest.raises(GeolipError, match="in-process training runs one worker"):
        train_aleph(_again(_job(data, workers=2), in_process=True), progress=lambda s: None)


def test_injected_worker_failure_restarts_from_the_last_checkpoint(data: Path) -> None:
    sets = ("train.steps=10", "train.log_every=1", "train.batch_size=4", "train.seed=1")
    fault = {"step": 6, "marker": str(data / "fault-restart")}
    job = _job(data, workers=2, sets=sets, checkpoint_every=4, max_failures=1, fault=fault)
    out = train_aleph(job, progress=lambda s: None)
    assert Path(fault["marker"]).exists()  # the worker really died
    assert _client(out.tracking_uri).get_run(out.run_id).info.status == "FINISHED"
    _assert_resumed_at_checkpoint(_steps(out.tracking_uri, out.run_id, "bpb"))
    assert json.loads((out.checkpoint / "meta.json").read_text())["step"] == 10


def test_a_stopped_run_resumes_from_its_checkpoint(data: Path) -> None:
    sets = ("train.steps=10", "train.log_every=1", "train.batch_size=4", "train.seed=2")
    fault = {"step": 6, "marker": str(data / "fault-stop")}
    job = _job(data, sets=sets, checkpoint_every=4, max_failures=0, fault=fault)
    with pytest.raises(GeolipError, match="failed"):
        train_aleph(job, progress=lambda s: None)
    from pipelines.tracking import default_tracking_uri

    uri = default_tracking_uri(data)
    client = _client(uri)
    experiment = client.get_experiment_by_name("geolip-aleph").experiment_id
    [failed] = [r for r in client.search_runs([experiment]) if r.data.tags.get("seed") == "2"]
    assert failed.info.status == "FAILED" and "error" in failed.data.tags
    with pytest.raises(GeolipError, match="--resume"):
        train_aleph(_again(job, fault=None), progress=lambda s: None)
    out = train_aleph(_again(job, fault=None, resume=True), progress=lambda s: None)
    assert out.run_id == failed.info.run_id  # the same MLflow run continues
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    _assert_resumed_at_checkpoint(_steps(uri, out.run_id, "bpb"))


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    return [
        (m.step, m.value) for m in sorted(_client(uri).get_metric_history(run_id, key), key=_order)
    ]


def test_a_continuation_is_the_donors_run_going_on(data: Path) -> None:
    """--graft continue: a 6-step donor continued for 4 steps is the 10-step run, step by step
    (a constant lr, so both have one schedule): the donor's Adam moments, step count and data
    stream carry over. A warm restart would start Adam afresh and differ from step 7."""
    flat = ("train.log_every=1", "train.batch_size=4", "train.eval_windows=8", "train.seed=3")
    flat += ("train.warmup_steps=0", "train.lr_final_frac=1.0")
    straight = train_aleph(_job(data, sets=(*flat, "train.steps=10")), progress=lambda s: None)
    donor = train_aleph(_job(data, sets=(*flat, "train.steps=6")), progress=lambda s: None)
    assert (donor.checkpoint / "train_state.pt").is_file()  # kept for a continuation
    logged = {
        a.path for a in _client(donor.tracking_uri).list_artifacts(donor.run_id, "checkpoint")
    }
    assert "checkpoint/model.safetensors" in logged and "checkpoint/train_state.pt" not in logged
    job = _job(
        data, sets=(*flat, "train.steps=4"), init_from=str(donor.checkpoint), graft="continue"
    )
    cont = train_aleph(job, progress=lambda s: None)
    uri = cont.tracking_uri
    got = _history(uri, cont.run_id, "loss_main")
    assert [s for s, _ in got] == [7, 8, 9, 10]
    want = [v for s, v in _history(uri, straight.run_id, "loss_main") if s > 6]
    np.testing.assert_allclose([v for _, v in got], want, rtol=1e-5)
    assert json.loads((cont.checkpoint / "meta.json").read_text())["step"] == 10
    assert _client(uri).get_run(cont.run_id).data.tags["graft"] == "continue"

    # Its schedule is the donor's: after a 4-step cosine donor, 2 more steps at the floor.
    cosine = ("train.log_every=1", "train.batch_size=4", "train.eval_windows=8", "train.seed=4")
    donor = train_aleph(_job(data, sets=(*cosine, "train.steps=4")), progress=lambda s: None)
    job = _job(
        data, sets=(*cosine, "train.steps=2"), init_from=str(donor.checkpoint), graft="continue"
    )
    cont = train_aleph(job, progress=lambda s: None)
    run = get_scale("tiny").run_config("pmix", cosine).train
    lrs = _history(cont.tracking_uri, cont.run_id, "lr")
    assert [s for s, _ in lrs] == [5, 6]
    assert [v for _, v in lrs] == pytest.approx([run.lr * run.lr_final_frac] * 2, rel=1e-6)


def test_a_donor_that_cannot_be_continued_is_refused(data: Path, tmp_path: Path) -> None:
    import shutil

    donor = train_aleph(
        _job(data, sets=(*TINY, "train.steps=2", "train.seed=5")), progress=lambda s: None
    )
    old = tmp_path / "old"
    shutil.copytree(donor.checkpoint, old)
    (old / "train_state.pt").unlink()  # as written before final checkpoints kept it
    with pytest.raises(GeolipError, match="--graft continue needs the donor's optimizer state"):
        train_aleph(_job(data, init_from=str(old), graft="continue"), progress=lambda s: None)
    bigger = (*TINY, "model.n_layers=3")
    with pytest.raises(GeolipError, match="continues the donor's own model.*n_layers"):
        train_aleph(
            _job(data, sets=bigger, init_from=str(donor.checkpoint), graft="continue"),
            progress=lambda s: None,
        )
