"""``geolip train svae``: the SVAE companion on Ray Train, its patch-shuffled control, the verdict.

Two fits share one MLflow run: the model on the data, then the same config on the patch-shuffled
data (§14's control, run automatically; its metrics carry the ``control/`` prefix). The driver
then evaluates both final checkpoints with the library (``geolip.train.svae.evaluate``), writes
the self-describing checkpoint (``model.safetensors``, ``geo_config.json``, ``host_config.json``,
``verdict.json``) and logs the verdict and plots.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import GeolipError


@dataclass(frozen=True)
class SVAEJob:
    data: str
    overrides: tuple[str, ...] = ()
    workers: int = 1
    resume: bool = False
    auto_resume: bool = False
    """Resume if the run's main fit has a checkpoint, else start it (``geolip demo``)."""
    control: bool = True
    experiment: str = "geolip-svae"
    tracking_uri: str | None = None
    data_dir: str | None = None
    max_failures: int = 2
    threads: int | None = None
    tags: dict = field(default_factory=dict)
    fault: dict | None = None
    """Test hook (``pipelines.aleph_worker._maybe_fail``): the main fit's last rank dies once."""


def build_configs(kind: str, data, overrides) -> tuple:
    """(GeoConfig, SVAETrainConfig) for the data, with ``--set model.k=v / train.k=v``."""
    from geolip.config import apply_section_overrides
    from geolip.models.svae.config import features, image16
    from geolip.train.svae import SVAETrainConfig

    geo = features(data.patch_dim, data.n_patches) if kind == "features" else image16()
    sections = apply_section_overrides({"model": geo, "train": SVAETrainConfig()}, overrides)
    return sections["model"], sections["train"]


def train_svae_job(job: SVAEJob, progress=print) -> dict:
    """Run ``job``; returns ``{"name", "run_id", "checkpoint", "verdict"}``."""
    from safetensors.torch import save_file

    from geolip.config import config_hash
    from geolip.models.svae.adapters import shuffle_patches
    from pipelines.aleph_job import check_run_name
    from pipelines.paths import data_dir
    from pipelines.svae_data import load_svae_data
    from pipelines.tracking import (
        artifact_root,
        check_tracking,
        ensure_experiment,
        open_run,
        resolve_tracking_uri,
    )

    data_root = data_dir(job.data_dir)
    data = load_svae_data(job.data)
    geo, tcfg = build_configs(data.kind, data, job.overrides)
    if tcfg.batch_size % job.workers:
        raise GeolipError(
            f"train.batch_size {tcfg.batch_size} must divide by --workers {job.workers}"
        )
    uri = resolve_tracking_uri(job.tracking_uri, data_root)
    check_tracking(uri)
    ident = {"geo": geo.to_dict(), "train": tcfg.to_dict(), "data": job.data, "w": job.workers}
    name = f"svae-{data.kind}-{config_hash(ident, 8)}-s{tcfg.seed}"
    run_dir = data_root / "runs" / "svae" / name
    train_dir = data_root / "ray_results" / name  # the main fit's
    job = dataclasses.replace(
        job, resume=check_run_name(run_dir, train_dir, job.resume, job.auto_resume)
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    x = _as_patches(data.train, geo), _as_patches(data.val, geo)
    tensors = {"train": data.train, "val": data.val,
               "train_shuffled": _from_patches(shuffle_patches(x[0], tcfg.seed), data.train, geo),
               "val_shuffled": _from_patches(shuffle_patches(x[1], tcfg.seed + 1), data.val, geo)}  # fmt: skip
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(run_dir / "data.safetensors"))
    experiment = ensure_experiment(uri, job.experiment, artifact_root(uri, data_root))
    tags = {"data": job.data, "kind": data.kind, "seed": str(tcfg.seed), **job.tags}
    params = {"geo": geo.to_dict(), "train": tcfg.to_dict(), "job.workers": job.workers}
    # Resumed: the same MLflow run continues; Ray Train resumes both fits from their checkpoints.
    logger = open_run(uri, experiment, name, resume=job.resume, tags=tags, params=params)
    progress(f"run {name}: MLflow {uri} (run {logger.run_id})")
    started = time.perf_counter()
    try:
        finals = {}
        for prefix, key in (("", "train"), ("control/", "train_shuffled")):
            if prefix and not job.control:
                continue
            config = {"geo": geo.to_dict(), "train": tcfg.to_dict(), "data": str(run_dir / "data.safetensors"),
                      "train_key": key, "val_key": key.replace("train", "val"), "prefix": prefix,
                      "run_id": logger.run_id, "tracking_uri": uri, "threads": job.threads,
                      "text": data.kind == "text", "fault": None if prefix else job.fault}  # fmt: skip
            result = _fit(job, name + ("-control" if prefix else ""), config, data_root)
            finals["control" if prefix else "main"] = _final_eval(
                result, geo, tensors, key, data.kind == "text"
            )
        out = _finish(
            job, name, run_dir, geo, tcfg, data, finals, logger, time.perf_counter() - started
        )
    except BaseException as exc:
        logger.finish("FAILED", error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}")
        raise
    logger.finish()
    return out


def _as_patches(x, geo):
    from geolip.models.svae.adapters import extract_patches

    return extract_patches(x, geo.ps) if x.ndim == 4 else x


def _from_patches(p, like, geo):
    from geolip.models.svae.adapters import stitch_patches

    if like.ndim == 4:
        _, C, H, W = like.shape
        return stitch_patches(p, C, H, W, geo.ps)
    return p


def _fit(job: SVAEJob, name: str, config: dict, data_root: Path):
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.aleph_train import _init_ray, _root_cause
    from pipelines.svae_worker import svae_loop_per_worker

    _init_ray(job.workers)
    trainer = TorchTrainer(
        svae_loop_per_worker,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=job.workers,
                                               use_gpu=ray.cluster_resources().get("GPU", 0) > 0),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(data_root / "ray_results"),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=job.max_failures)),
    )  # fmt: skip
    try:
        return trainer.fit()
    except Exception as exc:
        raise GeolipError(f"training run {name} failed: {_root_cause(exc)}") from exc


def _final_eval(result, geo, tensors: dict, key: str, text: bool) -> dict:
    from safetensors.torch import load_file

    from geolip.models.svae.model import SVAECompanion
    from geolip.train.svae import evaluate

    model = SVAECompanion(geo)
    with result.checkpoint.as_directory() as d:
        model.load_state_dict(load_file(str(Path(d) / "model.safetensors")))
    train = tensors[key]
    return {
        "model": model,
        "eval": evaluate(model, tensors[key.replace("train", "val")], train.mean(0), text=text),
    }


def _finish(job, name, run_dir: Path, geo, tcfg, data, finals, logger, seconds: float) -> dict:
    from safetensors.torch import save_file

    from geolip.train.svae import verdict as make_verdict
    from pipelines.svae_plots import log_svae_plots

    main = finals["main"]
    control = finals.get("control")
    verdict = make_verdict(main["model"], main["eval"], control and control["eval"], tcfg.steps)
    verdict.update(data=job.data, wall_seconds=round(seconds, 1))
    final = run_dir / "final"
    tmp = run_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    state = {k: v.detach().contiguous() for k, v in main["model"].state_dict().items()}
    save_file(state, str(tmp / "model.safetensors"))
    (tmp / "geo_config.json").write_text(json.dumps(geo.to_dict(), indent=1) + "\n")
    (tmp / "host_config.json").write_text(json.dumps(data.source, indent=1) + "\n")
    (tmp / "verdict.json").write_text(json.dumps(verdict, indent=1) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    logger.log_metrics({f"verdict/{k}": float(v) for k, v in verdict.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)}, tcfg.steps)  # fmt: skip
    logger.set_tags({"mechanism": verdict["mechanism"],
                     "control_mechanism": verdict.get("control", {}).get("mechanism", "")})  # fmt: skip
    logger.log_dict(verdict, "verdict.json")
    logger.log_artifacts(str(final), "checkpoint")
    log_svae_plots(logger, main["model"], data, finals)
    return {"name": name, "run_id": logger.run_id, "checkpoint": final, "verdict": verdict}
