"""The driver of ``geolip train aleph``: MLflow run, Ray Train ``TorchTrainer``, artifacts.

Order matters: the job is checked and prepared (``pipelines.aleph_job``) and the MLflow store,
experiment and run are created here on the driver before any worker starts (concurrent SQLite
initialisation races; see NOTES-stack). Workers receive the run id and log into it; the driver
then adds the artifacts: the final checkpoint, a verdict JSON and PNG plots read back from the
run's own metric history. A failed fit marks the run FAILED with its error.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.aleph_job import PreparedJob, TrainJob, check_job, prepare_job
from pipelines.errors import GeolipError

CURVES = ("bpb", "val_bpb")
HEAD_CURVES = ("coverage", "gate_acc", "inbank_nll")
IN_MEMORY_BYTES = 256 << 20


@dataclass(frozen=True)
class TrainOutcome:
    name: str
    run_id: str
    tracking_uri: str
    checkpoint: Path
    verdict: dict
    seconds: float


def train_aleph(job: TrainJob, progress=print, train_callbacks=()) -> TrainOutcome:
    """Run ``job`` on Ray Train (local Ray unless ``RAY_ADDRESS`` names a cluster).

    ``train_callbacks`` go to Ray Train's ``RunConfig`` (a Tune trial passes
    ``TuneReportCallback`` so that its scheduler sees every report).
    """
    from pipelines.paths import data_dir
    from pipelines.tracking import (
        artifact_root,
        check_tracking,
        ensure_experiment,
        open_run,
        resolve_tracking_uri,
    )

    check_job(job)  # a bad flag or config key is reported before the store is touched
    data = data_dir(job.data_dir)
    uri = resolve_tracking_uri(job.tracking_uri, data)
    check_tracking(uri)  # an unreachable server fails here, before any work
    prepared = prepare_job(job, progress=progress)
    experiment = ensure_experiment(uri, job.experiment, artifact_root(uri, data))
    params = {"config": prepared.run_cfg.to_dict(), "job": _job_params(prepared)}
    logger = open_run(
        uri, experiment, prepared.name, resume=prepared.job.resume, tags=prepared.tags,
        params=params,
    )  # fmt: skip
    progress(
        f"run {prepared.name}: MLflow {uri} (experiment {job.experiment}, run {logger.run_id})"
    )
    started = time.perf_counter()
    try:
        result = _fit(prepared, logger.run_id, uri, list(train_callbacks))
        outcome = _finish(prepared, logger, uri, result, time.perf_counter() - started)
    except BaseException as exc:
        logger.finish("FAILED", error=_one_line(exc))
        raise
    logger.finish()
    return outcome


def _fit(prepared: PreparedJob, run_id: str, uri: str, callbacks: list):
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    job = prepared.job
    _init_ray(job.workers)
    use_gpu = _use_gpu(job.use_gpu)
    threads = job.threads  # None: the worker divides its node's cores among its local workers
    dataset = _train_dataset(prepared)
    data_config = ray.train.DataConfig(
        datasets_to_split=[] if job.data_mode == "replicate" else "all"
    )
    trainer = TorchTrainer(
        _worker_entry(),
        train_loop_config=prepared.worker_config(run_id, uri, threads),
        scaling_config=ray.train.ScalingConfig(
            num_workers=job.workers,
            use_gpu=use_gpu,
            resources_per_worker={"GPU": 1} if use_gpu else {"CPU": 1},
        ),
        run_config=ray.train.RunConfig(
            name=prepared.name,
            storage_path=str(prepared.storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
            callbacks=callbacks or None,
        ),
        datasets={"train": dataset},
        dataset_config=data_config,
    )
    try:
        return trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; report the root cause on one line
        raise GeolipError(f"training run {prepared.name} failed: {_root_cause(exc)}") from exc


def _train_dataset(prepared: PreparedJob):
    """The train shards as a Ray Data dataset.

    Up to ``IN_MEMORY_BYTES`` the driver reads the shards into the object store itself
    (``from_arrow``): Ray Data's file listing and read tasks start several worker processes,
    which on a small machine cost ~15 s per run for a megabyte. Larger corpora use
    ``read_parquet``, so no single process ever holds the whole corpus.
    """
    import pyarrow.parquet as pq
    import ray.data

    side = prepared.shards.side("train")
    if prepared.shards.n_bytes("train") <= IN_MEMORY_BYTES:
        files = sorted(side.glob("*.parquet"))
        return ray.data.from_arrow([pq.read_table(f) for f in files])
    return ray.data.read_parquet(str(side))


def _worker_entry():
    from pipelines.aleph_worker import train_loop_per_worker

    return train_loop_per_worker


def _finish(prepared: PreparedJob, logger, uri: str, result, seconds: float) -> TrainOutcome:
    """Copy the final checkpoint out of Ray's storage, write the verdict, log artifacts."""
    from pipelines.tracking import metric_history

    final = prepared.run_dir / "final"
    tmp = prepared.run_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with result.checkpoint.as_directory() as d:
        shutil.copytree(d, tmp)
    (tmp / "train_state.pt").unlink(missing_ok=True)  # optimizer state stays in Ray's storage
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    history = _history(uri, logger.run_id, metric_history)
    verdict = _verdict(prepared, history, seconds)
    (prepared.run_dir / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    logger.log_artifacts(str(final), "checkpoint")
    logger.log_dict(verdict, "verdict.json")
    _log_plots(logger, history, prepared.name)
    return TrainOutcome(prepared.name, logger.run_id, uri, final, verdict, seconds)


def _history(uri: str, run_id: str, metric_history) -> list[dict]:
    """The run's metrics as rows ``{"step": s, key: value, ...}`` (last value per step wins)."""
    from mlflow.tracking import MlflowClient

    keys = MlflowClient(uri).get_run(run_id).data.metrics.keys()
    rows: dict[int, dict] = {}
    for key in keys:
        for step, value in metric_history(uri, run_id, key):
            rows.setdefault(step, {"step": step})[key] = value
    return [rows[s] for s in sorted(rows)]


def _verdict(prepared: PreparedJob, history: list[dict], seconds: float) -> dict:
    last = {}
    for row in history:
        last.update(row)
    keys = ("val_bpb", "bpb", "heldout_bpb_windowed", "heldout_bpb_streamed", "tokens_per_s")
    keys += tuple(k for k in last if k.startswith("gauge/") or k in HEAD_CURVES)
    return {
        "run": prepared.name,
        "head": prepared.job.head,
        "preset": prepared.job.preset,
        "steps": prepared.run_cfg.train.steps,
        "workers": prepared.job.workers,
        "wall_seconds": round(seconds, 2),
        "final": {k: last[k] for k in keys if k in last},
        "donor": prepared.job.init_from,
        "graft": prepared.job.graft if prepared.job.init_from else None,
    }


def _log_plots(logger, history: list[dict], name: str) -> None:
    from pipelines.plots import curves_figure, gauge_figure

    logger.log_figure(curves_figure(history, CURVES, f"{name}: bits/byte", ylabel="bpb"),
                      "bpb_curves.png")  # fmt: skip
    present = [k for k in HEAD_CURVES if any(k in row for row in history)]
    if present:
        logger.log_figure(curves_figure(history, present, f"{name}: head"), "head_curves.png")
    logger.log_figure(gauge_figure(history), "gauge.png")


def _job_params(prepared: PreparedJob) -> dict:
    job = prepared.job
    return {
        "corpus": job.corpus,
        "workers": job.workers,
        "data_mode": job.data_mode,
        "checkpoint_every": prepared.checkpoint_every,
        "bank": str(prepared.bank_path) if prepared.bank_path else "",
        "init_from": job.init_from or "",
        "graft": job.graft,
        "shards": str(prepared.shards.path),
    }


def _init_ray(workers: int) -> None:
    """Local Ray with at least one CPU per worker, unless Ray runs or ``RAY_ADDRESS`` is set."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"ignore_reinit_error": True, "logging_level": "WARNING"}
    if not os.environ.get("RAY_ADDRESS"):
        # The dashboard serves the state API Ray Train's placement-group cleaner polls.
        kwargs["num_cpus"] = max(os.cpu_count() or 1, workers + 1)
    ray.init(**kwargs)


def _use_gpu(flag: bool | None) -> bool:
    if flag is not None:
        return flag
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return _one_line(exc)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]
