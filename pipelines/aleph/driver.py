"""The driver of an AlephLM training run: MLflow run, Ray Train fit, artifacts.

Order matters: the job is checked and prepared (``pipelines.aleph.job``) and the MLflow store,
experiment and run are created here on the driver before any worker starts (concurrent SQLite
initialisation races; see NOTES-stack). Workers receive the run id and log into it; the driver
then adds the artifacts: the final checkpoint, a verdict JSON and PNG plots read back from the
run's own metric history. A failed fit marks the run FAILED with its error.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.parquet as pq
import ray
import ray.data
import ray.train

from geolip.aleph.experiments.employment import Employment
from pipelines.aleph.job import PreparedJob, TrainJob, check_job, prepare_job
from pipelines.aleph.worker import train_in_session, train_loop_per_worker
from pipelines.capacity import claim
from pipelines.lineage import bank_lineage, corpus_input, log_lineage
from pipelines.logged_model import LoggedModel, log_checkpoint_model
from pipelines.plots import curves_figure, gauge_figure
from pipelines.run_storage import (
    TRAIN_STATE,
    checkpoint_run_id,
    checkpoints,
    publish_checkpoint,
    publish_inputs,
    write_file,
)
from pipelines.runtime import fit, init_ray, interrupted_run, one_line
from pipelines.system_metrics import is_training_metric
from pipelines.tracking import (
    RunLogger,
    artifact_root,
    check_tracking,
    ensure_experiment,
    metric_rows,
    open_run,
)
from pipelines.train_session import fit_in_process

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
    published: str | None = None
    """The final checkpoint's URI on object storage (``--data-dir s3://...``), else None."""
    model: LoggedModel | None = None
    """The final checkpoint as the run's logged MLflow model (``runs:/RUN_ID/model``)."""


def train_aleph(job: TrainJob, progress=print, tune: bool = False) -> TrainOutcome:
    """Run ``job`` on Ray Train (local Ray unless ``RAY_ADDRESS`` names a cluster), or with
    ``ctx.in_process`` its one worker in this process (``pipelines.train_session``).

    ``tune``: the run is a Tune trial's, and every report reaches Tune (its scheduler sees
    ``val_bpb``): through ``TuneReportCallback`` on Ray Train, directly in process.
    """
    check_job(job)  # a bad flag is reported before the store is touched
    # GPUs decided and the workers' nodes waited for (an autoscaler may add them) before
    # anything is written: a cluster that cannot hold the run leaves nothing behind.
    job = replace(job, ctx=claim(job.ctx, "train aleph"))
    ctx = job.ctx
    check_tracking(ctx.tracking_uri)  # an unreachable server fails here, before any work
    prepared = prepare_job(job, progress=progress)
    experiment = ensure_experiment(
        ctx.tracking_uri, ctx.experiment, artifact_root(ctx.tracking_uri, ctx.data_dir, ctx.storage)
    )
    params = {"config": prepared.run.to_dict(), "job": _job_params(prepared)}
    train_dir = ctx.results(prepared.name)
    logger = open_run(
        ctx.tracking_uri,
        experiment,
        prepared.name,
        resume=prepared.ctx.resume,
        run_id=checkpoint_run_id(train_dir) if prepared.ctx.resume else None,
        tags=prepared.tags,
        params=params,
        config=prepared.run,
        device=ctx.device_name(),
    )
    if not prepared.ctx.resume:  # a resumed run has its inputs
        _log_lineage(prepared, logger)
    progress(
        f"run {prepared.name}: MLflow {ctx.tracking_uri} (experiment {ctx.experiment}, "
        f"run {logger.run_id})"
    )
    started = time.perf_counter()
    try:
        run = _train_in_process if ctx.in_process else _train_on_ray
        checkpoint = run(prepared, _worker_config(prepared, logger.run_id), tune)
        outcome = _finish(prepared, logger, checkpoint, time.perf_counter() - started)
    except KeyboardInterrupt:
        logger.finish("KILLED", error="interrupted (Ctrl-C)")
        raise interrupted_run(prepared.name, ctx.results(prepared.name)) from None
    except BaseException as exc:
        logger.finish("FAILED", error=one_line(exc))
        raise
    logger.finish()
    return outcome


def _train_on_ray(prepared: PreparedJob, config: dict, tune: bool) -> ray.train.Checkpoint:
    """A Ray Train worker group; returns the final checkpoint."""
    ctx = prepared.ctx
    init_ray(ctx.workers)
    replicate = prepared.job.data_mode == "replicate"
    callbacks = []
    if tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    result = fit(
        train_loop_per_worker,
        config,
        prepared.name,
        ctx,
        datasets={"train": _train_dataset(prepared)},
        dataset_config=ray.train.DataConfig(datasets_to_split=[] if replicate else "all"),
        callbacks=callbacks,
    )
    return result.checkpoint


def _train_in_process(prepared: PreparedJob, config: dict, tune: bool) -> ray.train.Checkpoint:
    """The run's one worker in this process, reading the train shards' files itself; its
    checkpoints land where Ray Train's would."""
    files = {"train": [str(f) for f in sorted(prepared.shards.side("train").glob("*.parquet"))]}
    return fit_in_process(train_in_session, config, prepared.name, prepared.ctx, files, tune)


def _log_lineage(prepared: PreparedJob, logger: RunLogger) -> None:
    """The run's inputs: its corpus, the atlas its bank was cut from, and the bank."""
    ctx = prepared.ctx
    items = [corpus_input(prepared.job.corpus, prepared.shards)]
    if prepared.bank_path is not None:
        items += bank_lineage(prepared.bank_path, items[0])
    log_lineage(ctx.tracking_uri, ctx.data_dir, logger.run_id, items, ctx.storage)


def _worker_config(prepared: PreparedJob, run_id: str) -> dict:
    """The workers' config, with the run's newest checkpoint when it resumes (``resume_dir``).

    Ray Train V2 resumes only from checkpoints its controller recorded in the run's snapshot,
    and a controller lost with its node (a sweep trial whose driver's node died) may not have
    recorded the newest one, or any: the retried trial would start again from step 0 in its
    continued MLflow run. The workers use Ray's own checkpoint when it has one, else this.
    """
    ctx = prepared.ctx
    config = prepared.worker_config(run_id)
    if ctx.storage:  # workers on other nodes cannot read this node's files: via the store
        config["inputs"] = publish_inputs(ctx.root().child(prepared.store_dir), _inputs(config))
    written = checkpoints(ctx.results(prepared.name), complete=True)
    if ctx.resume and written:  # names are timestamps: the last is the newest
        config["resume_dir"] = written[-1].uri
    return config


def _inputs(config: dict) -> dict[str, Path]:
    """The worker config's keys that name local files (what ``publish_inputs`` uploads)."""
    keys = ("bank", "init_dir", "eval_windows", "heldout", "continue_state")
    return {k: Path(config[k]) for k in keys if config.get(k)}


def _train_dataset(prepared: PreparedJob):
    """The train shards as a Ray Data dataset.

    Up to ``IN_MEMORY_BYTES`` the driver reads the shards into the object store itself
    (``from_arrow``): Ray Data's file listing and read tasks start several worker processes,
    which on a small machine cost ~15 s per run for a megabyte. Larger corpora use
    ``read_parquet``, so no single process ever holds the whole corpus.
    """
    side = prepared.shards.side("train")
    if prepared.shards.n_bytes("train") <= IN_MEMORY_BYTES:
        files = sorted(side.glob("*.parquet"))
        return ray.data.from_arrow([pq.read_table(f) for f in files])
    return ray.data.read_parquet(str(side))


def _finish(prepared: PreparedJob, logger: RunLogger, checkpoint, seconds: float) -> TrainOutcome:
    """Copy the final checkpoint out of Ray's storage, write the verdict, log artifacts."""
    final = prepared.run_dir / "final"
    tmp = prepared.run_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with checkpoint.as_directory() as d:
        shutil.copytree(d, tmp)
    # The optimizer state stays with the final checkpoint (a donor can be continued,
    # pipelines.aleph.continuation) but not in MLflow, where it would double the model's size.
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    history = metric_rows(logger.uri, logger.run_id, is_training_metric)
    verdict = _verdict(prepared, history, seconds)
    (prepared.run_dir / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    published = _publish(prepared, final, verdict, logger.run_id)
    for item in sorted(final.iterdir()):
        if item.name == TRAIN_STATE:
            continue
        if item.is_dir():
            logger.log_artifacts(str(item), f"checkpoint/{item.name}")
        else:
            logger.log_artifact(item, "checkpoint")
    logger.log_dict(verdict, "verdict.json")
    _log_plots(logger, history, prepared.name)
    model = _log_model(prepared, final, logger)
    return TrainOutcome(
        prepared.name, logger.run_id, logger.uri, final, verdict, seconds, published, model
    )


def _log_model(prepared: PreparedJob, final: Path, logger: RunLogger) -> LoggedModel:
    """The final checkpoint (without its optimizer state) as the run's MLflow model."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint"
        shutil.copytree(final, ckpt, ignore=shutil.ignore_patterns(TRAIN_STATE))
        return log_checkpoint_model(
            logger.uri,
            logger.run_id,
            ckpt,
            "aleph",
            register=prepared.job.register,
            step=prepared.run.train.steps,
        )


def _publish(prepared: PreparedJob, final: Path, verdict: dict, run_id: str) -> str | None:
    """With a data directory on object storage, the final checkpoint and verdict there too
    (the local copy is the work directory's); returns the checkpoint's URI."""
    if not prepared.ctx.storage:
        return None
    run = prepared.ctx.root().child(prepared.store_dir)
    meta = {"run": prepared.name, "mlflow_run_id": run_id}
    uri = publish_checkpoint(final, run.child("final"), meta)
    write_file(run, "verdict.json", (json.dumps(verdict, indent=2) + "\n").encode())
    return uri


def _verdict(prepared: PreparedJob, history: list[dict], seconds: float) -> dict:
    last = {}
    for row in history:
        last.update(row)
    keys = ("val_bpb", "bpb", "heldout_bpb_windowed", "heldout_bpb_streamed", "tokens_per_s")
    keys += tuple(k for k in last if k.startswith(("gauge/", "employ_")) or k in HEAD_CURVES)
    job = prepared.job
    return {
        "run": prepared.name,
        "head": prepared.run.head,
        "preset": prepared.run.preset,
        "steps": prepared.run.train.steps,
        "workers": prepared.ctx.workers,
        "wall_seconds": round(seconds, 2),
        "final": {k: last[k] for k in keys if k in last},
        "employment": used.verdict if (used := Employment.from_metrics(last)) else None,
        "donor": job.init_from,
        "graft": job.graft if job.init_from else None,
    }


def _log_plots(logger: RunLogger, history: list[dict], name: str) -> None:
    curves = curves_figure(history, CURVES, f"{name}: bits/byte", ylabel="bpb")
    logger.log_figure(curves, "bpb_curves.png")
    present = [k for k in HEAD_CURVES if any(k in row for row in history)]
    if present:
        logger.log_figure(curves_figure(history, present, f"{name}: head"), "head_curves.png")
    logger.log_figure(gauge_figure(history), "gauge.png")


def _job_params(prepared: PreparedJob) -> dict:
    job = prepared.job
    return {
        "corpus": job.corpus,
        "workers": prepared.ctx.workers,
        "engine": prepared.ctx.engine,
        "data_mode": job.data_mode,
        "checkpoint_every": prepared.checkpoint_every,
        "bank": str(prepared.bank_path) if prepared.bank_path else "",
        "init_from": job.init_from or "",
        "graft": job.graft,
        "shards": str(prepared.shards.path),
    }
