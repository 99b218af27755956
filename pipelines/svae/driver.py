"""The driver of an SVAE companion run: Ray Train, its patch-shuffled control, the verdict.

Two fits share one MLflow run: the model on the data, then the same config on the patch-shuffled
data (§14's control, run automatically; its metrics carry the ``control/`` prefix). The driver
then evaluates both final checkpoints with the library (``geolip.svae.train.evaluate``), writes
the self-describing checkpoint (``geolip.svae.checkpoint``: ``model.safetensors``, ``config.json``,
``meta.json``, ``host_config.json``, ``verdict.json``) and logs the verdict and plots.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from geolip.config import config_hash
from geolip.svae.adapters import extract_patches, shuffle_patches, stitch_patches
from geolip.svae.checkpoint import save_svae_checkpoint
from geolip.svae.config import GeoConfig, SVAERunConfig
from geolip.svae.model import SVAECompanion
from geolip.svae.train import evaluate
from geolip.svae.train import verdict as make_verdict
from pipelines.capacity import claim
from pipelines.errors import GeolipError
from pipelines.lineage import features_input, file_input, log_lineage
from pipelines.logged_model import log_checkpoint_model
from pipelines.run_storage import checkpoint_run_id
from pipelines.runtime import RunContext, check_run_name, fit, interrupted_run, one_line
from pipelines.svae.data import SVAEData, load_svae_data
from pipelines.svae.plots import log_svae_plots
from pipelines.svae.worker import svae_in_session, svae_loop_per_worker
from pipelines.system_metrics import settings as system_metrics_settings
from pipelines.tracking import RunLogger, artifact_root, check_tracking, ensure_experiment, open_run
from pipelines.train_session import fit_in_process


@dataclass(frozen=True)
class SVAEJob:
    """One SVAE run: the data spec, its config (``pipelines.svae.data.run_config``), context."""

    data: str
    """features:DIR | images:structured | text:CORPUS_URI."""
    run: SVAERunConfig
    ctx: RunContext
    control: bool = True
    """Also fit the patch-shuffled control (§14)."""
    run_name: str | None = None
    """The run's name (a sweep's trial); None: from the data kind, config hash and seed."""
    register: str | None = None
    """Register the final logged model under this MLflow registered-model name."""


def train_svae_job(job: SVAEJob, progress=print) -> dict:
    """Run ``job``; returns ``{"name", "run_id", "checkpoint", "verdict", "model"}`` (the
    final checkpoint's ``pipelines.logged_model.LoggedModel``)."""
    ctx, geo, tcfg = job.ctx, job.run.model, job.run.train
    ctx.check_workers()
    data = load_svae_data(job.data)
    _check(job, data)
    ident = {"geo": geo.to_dict(), "train": tcfg.to_dict(), "data": job.data, "w": ctx.workers}
    name = job.run_name or f"svae-{data.kind}-{config_hash(ident, 8)}-s{tcfg.seed}"
    run_dir = ctx.data_dir / "runs" / "svae" / name
    train_dir = ctx.results(name)  # the main fit's
    # The name is checked first: a run in use is refused without waiting for Ray to start.
    ctx = ctx.replace(resume=check_run_name(run_dir, train_dir, ctx.resume, ctx.auto_resume))
    ctx = claim(ctx, "train svae")  # GPUs and nodes, before anything is written
    check_tracking(ctx.tracking_uri)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = _tensors(data, geo, tcfg.seed)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(run_dir / "data.safetensors"))
    experiment = ensure_experiment(
        ctx.tracking_uri, ctx.experiment, artifact_root(ctx.tracking_uri, ctx.data_dir)
    )
    tags = {"data": job.data, "kind": data.kind, "seed": str(tcfg.seed), **ctx.tags}
    params = {"geo": geo.to_dict(), "train": tcfg.to_dict(), "job.workers": ctx.workers}
    params["job.engine"] = ctx.engine
    # Resumed: the same MLflow run continues; Ray Train resumes both fits from their checkpoints.
    logger = open_run(
        ctx.tracking_uri,
        experiment,
        name,
        resume=ctx.resume,
        run_id=checkpoint_run_id(train_dir) if ctx.resume else None,
        tags=tags,
        params=params,
        config=job.run,
        device=ctx.device_name(),
    )
    if not ctx.resume:  # a resumed run has its inputs
        _log_lineage(job, data, run_dir, ctx, logger)
    progress(f"run {name}: MLflow {ctx.tracking_uri} (run {logger.run_id})")
    started = time.perf_counter()
    try:
        finals = {}
        for prefix, key in (("", "train"), ("control/", "train_shuffled")):
            if prefix and not job.control:
                continue
            config = _worker_config(job, run_dir, key, prefix, logger, data.kind == "text")
            fit_name = name + ("-control" if prefix else "")
            if ctx.in_process:
                checkpoint = fit_in_process(svae_in_session, config, fit_name, ctx)
            else:
                checkpoint = fit(svae_loop_per_worker, config, fit_name, ctx).checkpoint
            finals["control" if prefix else "main"] = _final_eval(
                checkpoint, geo, tensors, key, data.kind == "text"
            )
        out = _finish(job, name, run_dir, data, finals, logger, time.perf_counter() - started)
    except KeyboardInterrupt:
        logger.finish("KILLED", error="interrupted (Ctrl-C)")
        raise interrupted_run(name, train_dir) from None
    except BaseException as exc:
        logger.finish("FAILED", error=one_line(exc, 400))
        raise
    logger.finish()
    return out


def _log_lineage(job: SVAEJob, data: SVAEData, run_dir: Path, ctx, logger: RunLogger) -> None:
    """The run's inputs: the feature shards (``features:DIR``, with their extraction's build
    run) and the exact tensors both fits read (``data.safetensors``)."""
    items = []
    if data.kind == "features" and (Path(data.source["dir"]) / "manifest.json").is_file():
        items.append(features_input(Path(data.source["dir"])))
    profile = {"train": len(data.train), "validation": len(data.val)}
    items.append(file_input("data", job.data, run_dir / "data.safetensors", profile))
    log_lineage(ctx.tracking_uri, ctx.data_dir, logger.run_id, items, ctx.storage)


def _check(job: SVAEJob, data: SVAEData) -> None:
    geo, batch, workers = job.run.model, job.run.train.batch_size, job.ctx.workers
    if batch % workers:
        raise GeolipError(f"train.batch_size {batch} must divide by --workers {workers}")
    if data.patch_dim is not None and data.patch_dim != geo.P:
        raise GeolipError(
            f"--data {job.data}: its tokens cut into patches of {data.patch_dim}, but the "
            f"model's patch_dim is {geo.P}"
        )


def verdict_metrics(verdict: dict) -> dict[str, float]:
    """The verdict's numbers as MLflow metrics: ``verdict/KEY``, and the control's
    ``verdict/control/KEY`` (what a sweep's summary reads, ``tune.svae_table``)."""

    def numbers(d: dict, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}{k}": float(v)
            for k, v in d.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    return numbers(verdict, "verdict/") | numbers(verdict.get("control", {}), "verdict/control/")


def _tensors(data: SVAEData, geo: GeoConfig, seed: int) -> dict:
    """Train and validation samples, and their patch-shuffled copies (the control's data)."""
    x = _as_patches(data.train, geo), _as_patches(data.val, geo)
    return {
        "train": data.train,
        "val": data.val,
        "train_shuffled": _from_patches(shuffle_patches(x[0], seed), data.train, geo),
        "val_shuffled": _from_patches(shuffle_patches(x[1], seed + 1), data.val, geo),
    }


def _worker_config(job, run_dir: Path, key: str, prefix: str, logger, text: bool) -> dict:
    return {
        "run": job.run,
        "data": str(run_dir / "data.safetensors"),
        "train_key": key,
        "val_key": key.replace("train", "val"),
        "prefix": prefix,
        "run_id": logger.run_id,
        "tracking_uri": job.ctx.tracking_uri,
        "threads": job.ctx.threads,
        "text": text,
        "fault": None if prefix else job.ctx.fault,
        "system_metrics": system_metrics_settings(job.ctx.system_metrics),
    }


def _as_patches(x, geo: GeoConfig):
    return extract_patches(x, geo.ps) if x.ndim == 4 else x


def _from_patches(p, like, geo: GeoConfig):
    if like.ndim == 4:
        _, C, H, W = like.shape
        return stitch_patches(p, C, H, W, geo.ps)
    return p


def _final_eval(checkpoint, geo: GeoConfig, tensors: dict, key: str, text: bool) -> dict:
    model = SVAECompanion(geo)
    with checkpoint.as_directory() as d:
        model.load_state_dict(load_file(str(Path(d) / "model.safetensors")))
    train = tensors[key]
    val = tensors[key.replace("train", "val")]
    return {"model": model, "eval": evaluate(model, val, train.mean(0), text=text)}


def _finish(
    job: SVAEJob,
    name: str,
    run_dir: Path,
    data: SVAEData,
    finals: dict,
    logger: RunLogger,
    seconds: float,
) -> dict:
    geo, steps = job.run.model, job.run.train.steps
    main, control = finals["main"], finals.get("control")
    verdict = make_verdict(main["model"], main["eval"], control and control["eval"], steps)
    verdict.update(data=job.data, wall_seconds=round(seconds, 1))
    # A resumed run that finishes again replaces its own final checkpoint.
    final = save_svae_checkpoint(
        run_dir / "final",
        main["model"],
        geo,
        meta={"data": job.data, "steps": steps, "run_name": name, "mlflow_run_id": logger.run_id},
        extra_json={"host_config.json": data.source, "verdict.json": verdict},
        overwrite=True,
    )
    logger.log_metrics(verdict_metrics(verdict), steps)
    logger.set_tags(
        {
            "mechanism": verdict["mechanism"],
            "control_mechanism": verdict.get("control", {}).get("mechanism", ""),
        }
    )
    logger.log_dict(verdict, "verdict.json")
    logger.log_artifacts(str(final), "checkpoint")
    log_svae_plots(logger, main["model"], data, finals)
    model = log_checkpoint_model(
        logger.uri, logger.run_id, final, "svae", register=job.register, step=steps
    )
    return {
        "name": name,
        "run_id": logger.run_id,
        "checkpoint": final,
        "verdict": verdict,
        "model": model,
    }
