"""What runs inside one Ray Tune trial (the Train V2 driver pattern of NOTES-stack).

A ``train`` trial is a whole ``geolip train aleph`` run (``pipelines.aleph_train``): its own
``TorchTrainer`` with ``TuneReportCallback``, so every Ray Train report reaches Tune (ASHA sees
``val_bpb``), and its own MLflow run, a child of the sweep's run. Its name is fixed by the sweep
and the trial key, so a restored sweep resumes an interrupted trial from its last checkpoint. The
``contrast`` and ``bank_swap`` trials evaluate the final checkpoint of an earlier trial.
"""

from __future__ import annotations

import json
from pathlib import Path

from tune.spec import TrialSpec

CONTRAST_SEEDS = (0, 1, 2)  # spec §10.1: the mean over 3 seeds


def trial_run_name(sweep: str, key: str) -> str:
    return f"{sweep}-{key}"


def checkpoint_of(ctx: dict, key: str) -> Path:
    """The final checkpoint of trial ``key`` of this sweep, or ``key`` itself if it is a path."""
    if key in ctx.get("external", {}):
        return Path(ctx["external"][key])
    return Path(ctx["data_dir"]) / "runs" / "aleph" / trial_run_name(ctx["sweep"], key) / "final"


def trial_overrides(spec: TrialSpec, ctx: dict, sampled: dict | None = None) -> tuple[str, ...]:
    """Scale defaults, then the trial's own, then the user's ``--set``, then a search sample."""
    out = (*ctx["scale_overrides"], f"train.steps={ctx['steps']}", *spec.overrides, *ctx["sets"])
    return out + tuple(f"{k}={v}" for k, v in (sampled or {}).items())


def run_trial(config: dict, specs: dict, ctx: dict) -> None:
    """The Tune trainable: ``config = {"key": trial key, ...sampled search values}``; ``specs``
    maps keys to TrialSpec dicts, ``ctx`` is the sweep's context (``tune.with_parameters``)."""
    import ray.data

    config = config.get("retry", config)  # a failed trial retried on --resume (tune.sweep)
    spec = TrialSpec.from_dict(specs[config["key"]])
    sampled = {k: v for k, v in config.items() if k != "key"}
    # Tune's trial table is the sweep's progress display; per-trial dataset bars would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    run = {"train": _train, "contrast": _contrast, "bank_swap": _bank_swap}[spec.kind]
    try:
        run(spec, ctx, sampled)
    except Exception as exc:
        _record_failure(spec, ctx, sampled, exc)
        raise


def _record_failure(spec: TrialSpec, ctx: dict, sampled: dict, exc: Exception) -> None:
    """A trial that failed before its MLflow run existed still gets one, FAILED, with the error:
    the summary (read from MLflow alone) counts it."""
    from pipelines.tracking import find_run, start_run

    name = trial_run_name(ctx["sweep"], _key(spec, sampled))
    if find_run(ctx["uri"], ctx["experiment_id"], name) is not None:
        return  # the run's own code marked it FAILED
    logger = start_run(ctx["uri"], ctx["experiment_id"], name, tags=_tags(spec, ctx, sampled))
    logger.finish("FAILED", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500])


def _key(spec: TrialSpec, sampled: dict) -> str:
    return spec.key if not sampled else f"{spec.key}-{_sample_id(sampled)}"


def _tags(spec: TrialSpec, ctx: dict, sampled: dict) -> dict:
    tags = {**spec.tags, "mlflow.parentRunId": ctx["parent_run_id"], "sweep": ctx["sweep"]}
    tags.update(program=ctx["program"], phase=ctx["phase"], trial=spec.key, kind=spec.kind)
    if sampled:
        tags["sample"] = json.dumps(sampled, sort_keys=True)
    return tags


def _train(spec: TrialSpec, ctx: dict, sampled: dict) -> None:
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.aleph_job import TrainJob
    from pipelines.aleph_train import train_aleph

    name = trial_run_name(ctx["sweep"], _key(spec, sampled))
    storage = Path(ctx["data_dir"]) / "ray_results" / name
    job = TrainJob(
        corpus=ctx["corpus"], preset=ctx["preset"], head=spec.head,
        overrides=trial_overrides(spec, ctx, sampled), workers=ctx["workers"],
        use_gpu=ctx["use_gpu"], max_failures=ctx["max_failures"],
        init_from=str(checkpoint_of(ctx, spec.donor)) if spec.donor else None,
        graft=spec.graft, experiment=ctx["experiment"], tracking_uri=ctx["uri"],
        data_dir=ctx["data_dir"], eval_bytes=ctx["eval_bytes"], run_name=name,
        tags=_tags(spec, ctx, sampled), fault=ctx.get("faults", {}).get(spec.key),
        # A restored sweep continues an interrupted trial from its last checkpoint.
        resume=storage.exists() and any(storage.glob("checkpoint_*")),
    )  # fmt: skip
    train_aleph(job, progress=print, train_callbacks=[TuneReportCallback()])


def _sample_id(sampled: dict) -> str:
    from geolip.config import config_hash

    return config_hash(sampled, 6)


def _source(spec: TrialSpec, ctx: dict):
    """The source trial's model, config and the fixed held-out windows it was scored on."""
    from safetensors.torch import load_file

    from geolip.checkpoint import load_checkpoint

    path = checkpoint_of(ctx, spec.source)
    model, run_cfg, _ = load_checkpoint(path)
    windows = load_file(str(path.parent / "eval_windows.safetensors"))["windows"]
    return model, run_cfg, list(windows.split(16))


def _child_logger(spec: TrialSpec, ctx: dict, params: dict):
    from pipelines.tracking import open_run

    name = trial_run_name(ctx["sweep"], spec.key)
    tags = _tags(spec, ctx, {})
    return open_run(ctx["uri"], ctx["experiment_id"], name, resume=True, tags=tags, params=params)


def _contrast(spec: TrialSpec, ctx: dict, sampled: dict) -> None:
    import ray.tune

    from geolip.experiments.contrast import controller_contrast

    model, _, batches = _source(spec, ctx)
    report = controller_contrast(model, batches, ctx["contrast_ops"], CONTRAST_SEEDS)
    metrics = {"contrast/base_bpb": report.base_bpb}
    for row in report.rows():
        metrics[f"contrast/{row['op']}/delta_bpb"] = row["delta_bpb_mean"]
        metrics[f"contrast/{row['op']}/delta_bpb_std"] = row["delta_bpb_std"]
    params = {"source": str(checkpoint_of(ctx, spec.source)), "seeds": list(CONTRAST_SEEDS)}
    with _child_logger(spec, ctx, params) as logger:
        logger.log_metrics(metrics, 0)
        logger.log_dict({"rows": report.rows(), "base_bpb": report.base_bpb}, "contrast.json")
    ray.tune.report({k.replace("/", "_"): v for k, v in metrics.items()})


def _bank_swap(spec: TrialSpec, ctx: dict, sampled: dict) -> None:
    """§13.4: the trained model on another bank, no parameter changes; both banks scored."""
    import ray.tune

    from geolip.eval import bpb_batches
    from geolip.experiments.graft import swap_bank
    from pipelines.aleph_job import train_bank
    from pipelines.byte_shards import build_byte_shards

    model, _, batches = _source(spec, ctx)
    shards = build_byte_shards(ctx["corpus"], Path(ctx["data_dir"]), progress=lambda s: None)
    size = ctx["banks"][spec.bank]
    bank = train_bank(shards, ctx["corpus"], size)
    swapped = swap_bank(model, bank)
    metrics = {"swap/bpb_trained_bank": bpb_batches(model, batches).bpb}
    metrics["swap/bpb_swapped_bank"] = bpb_batches(swapped, batches).bpb
    metrics["swap/delta_bpb"] = metrics["swap/bpb_swapped_bank"] - metrics["swap/bpb_trained_bank"]
    metrics["swap/coverage_trained"] = _coverage(model.bank, batches)
    metrics["swap/coverage_swapped"] = _coverage(bank, batches)
    params = {"source": str(checkpoint_of(ctx, spec.source)), "eval_bank_size": size}
    with _child_logger(spec, ctx, params) as logger:
        logger.log_metrics(metrics, 0)
    ray.tune.report({k.replace("/", "_"): v for k, v in metrics.items()})


def _coverage(bank, batches) -> float:
    """Fraction of the held-out target trigrams that are in ``bank``."""
    import torch

    from geolip.models.aleph.bank import trigram_codes

    targets = torch.cat([b[:, 1:].reshape(-1, 3) for b in batches])
    codes = trigram_codes(targets.long())
    return float(torch.isin(codes, trigram_codes(bank.trigrams.cpu())).float().mean())
