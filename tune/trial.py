"""What runs inside one Ray Tune trial (the Train V2 driver pattern of NOTES-stack).

A ``train`` trial is a whole AlephLM training run (``pipelines.aleph.driver``) of the config its
program built, every report reaching Tune (ASHA sees ``val_bpb``), in its own MLflow run, a
child of the sweep's run. A one-worker trial trains in the trial's own process
(``--trial-engine``, ``pipelines.train_session``); more workers get their own ``TorchTrainer``. Its name
is fixed by the sweep and the trial key, so a restored sweep resumes an interrupted trial from its
last checkpoint. An ``svae`` trial is a whole SVAE companion run (``pipelines.svae.driver``)
with its patch-shuffled control, its verdict reported to Tune at the end. The ``contrast`` and
``bank_swap`` trials evaluate the final checkpoint of an earlier trial.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray.data
import ray.tune
from safetensors.torch import load_file

from geolip.aleph.bank import load_bank
from geolip.aleph.checkpoint import load_checkpoint
from geolip.aleph.experiments.bank_swap import bank_swap
from geolip.aleph.experiments.contrast import controller_contrast
from geolip.config import apply_changes, config_hash
from pipelines.aleph.driver import train_aleph
from pipelines.aleph.job import TrainJob
from pipelines.run_storage import exists, has_checkpoint
from pipelines.runtime import RunContext, one_line
from pipelines.storage import MARKER, is_uri, parse_root, readable
from pipelines.svae.driver import SVAEJob, train_svae_job, verdict_metrics
from pipelines.tracking import RunLogger, find_run, open_run, start_run
from tune.banks import swap_key
from tune.spec import TrialSpec

CONTRAST_SEEDS = (0, 1, 2)  # spec §10.1: the mean over 3 seeds
CONTRAST_OPS = ("permute", "randomize")


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares: the sweep, its parent MLflow run, the ``RunContext``
    its training runs use, and the checkpoints it reads from outside (``external``)."""

    sweep: str
    program: str
    parent_run_id: str
    experiment_id: str
    run: RunContext
    corpus: str = "builtin:python-docs"
    bank_source: str = "atlas"
    eval_bytes: int = 1_000_000
    svae_data: str = "images:structured"
    """The ``svae`` trials' data (``geolip train svae --data``)."""
    swap_banks: dict = field(default_factory=dict)
    """The survey's swap bank files, ``{tune.banks.swap_key: path}`` (cut before the trials)."""
    phase: str = ""
    external: dict = field(default_factory=dict)
    """Trial key or ``--donor`` -> checkpoint directory (another sweep's trials, a donor)."""
    faults: dict = field(default_factory=dict)

    def replace(self, **changes) -> TrialContext:
        return dataclasses.replace(self, **changes)


def trial_run_name(sweep: str, key: str) -> str:
    return f"{sweep}-{key}"


def final_checkpoint(run: RunContext, sweep: str, key: str) -> str:
    """Where the final checkpoint of trial ``key`` of sweep ``sweep`` lives: a local path, or
    its URI where the data directory is on object storage (any node reads it from there)."""
    return run.root().child(f"runs/aleph/{trial_run_name(sweep, key)}/final").uri


def checkpoint_of(ctx: TrialContext, key: str) -> str:
    """The final checkpoint of trial ``key`` of this sweep, or of an external key."""
    if key in ctx.external:
        return str(ctx.external[key])
    return final_checkpoint(ctx.run, ctx.sweep, key)


def has_final(location: str) -> bool:
    """Whether a final checkpoint is there (on the store: published, its marker written)."""
    if not is_uri(location):
        return Path(location).is_dir()
    return exists(parse_root(location, "--data-dir").child(MARKER))


def trial_identity(config: dict) -> tuple[str, str]:
    """A Tune trial's config as its MLflow run's tags name it: ``(trial key, sample JSON)``
    (``""`` without sampled values; ``tune.report.close_open_children`` matches them)."""
    key, sampled = _key_and_sample(config)
    return key, _sample_tag(sampled) if sampled else ""


def _key_and_sample(config: dict) -> tuple[str, dict]:
    """A trial config's key and its sampled search values (a retried trial's are nested under
    ``retry`` by ``tune.sweep``)."""
    config = config.get("retry", config)
    return config["key"], {k: v for k, v in config.items() if k != "key"}


def _sample_tag(sampled: dict) -> str:
    return json.dumps(sampled, sort_keys=True)


def trial_config(result) -> dict:
    """A Tune result's trial config. ``result.config`` comes from the trial's last report: a
    trial that failed before reporting, or whose process died before its last report was
    recorded, has none there; Tune's ``params.json`` in the trial's directory always has it."""
    if result.config is not None:
        return dict(result.config)
    with result.filesystem.open_input_stream(f"{result.path}/params.json") as f:
        return json.loads(f.read())


def run_trial(config: dict, specs: dict, ctx: TrialContext) -> None:
    """The Tune trainable: ``config = {"key": trial key, ...sampled search values}``; ``specs``
    maps keys to TrialSpecs, ``ctx`` is the sweep's context (``tune.with_parameters``)."""
    key, sampled = _key_and_sample(config)  # a failed trial retried on --resume: nested
    spec = specs[key]
    # Tune's trial table is the sweep's progress display; per-trial dataset bars would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    kinds = {"train": _train, "svae": _svae, "contrast": _contrast, "bank_swap": _bank_swap}
    run = kinds[spec.kind]
    try:
        run(spec, ctx, sampled)
    except Exception as exc:
        _record_failure(spec, ctx, sampled, exc)
        raise


def _record_failure(spec: TrialSpec, ctx: TrialContext, sampled: dict, exc: Exception) -> None:
    """A trial that failed before its MLflow run existed still gets one, FAILED, with the error:
    the summary (read from MLflow alone) counts it."""
    name = trial_run_name(ctx.sweep, _key(spec, sampled))
    uri = ctx.run.tracking_uri
    if find_run(uri, ctx.experiment_id, name, ctx.parent_run_id) is not None:
        return  # the run's own code marked it FAILED
    logger = start_run(uri, ctx.experiment_id, name, tags=_tags(spec, ctx, sampled))
    logger.finish("FAILED", error=one_line(exc))


def _key(spec: TrialSpec, sampled: dict) -> str:
    return spec.key if not sampled else f"{spec.key}-{config_hash(sampled, 6)}"


def _tags(spec: TrialSpec, ctx: TrialContext, sampled: dict) -> dict:
    tags = {**spec.tags, "mlflow.parentRunId": ctx.parent_run_id, "sweep": ctx.sweep}
    tags.update(program=ctx.program, phase=ctx.phase, trial=spec.key, kind=spec.kind)
    if sampled:
        tags["sample"] = _sample_tag(sampled)
    return tags


def _run_context(spec: TrialSpec, ctx: TrialContext, sampled: dict) -> tuple[str, RunContext]:
    """A training trial's run name and ``RunContext``: its tags and test fault, resuming where
    a restored sweep finds the run's last checkpoint."""
    name = trial_run_name(ctx.sweep, _key(spec, sampled))
    resume = has_checkpoint(ctx.run.results(name))
    run_ctx = ctx.run.replace(
        tags=_tags(spec, ctx, sampled), fault=ctx.faults.get(spec.key), resume=resume
    )
    return name, run_ctx


def _tune_report(metrics: dict) -> None:
    """``metrics`` to Tune, whose result keys take no ``/``."""
    ray.tune.report({k.replace("/", "_"): v for k, v in metrics.items()})


def _train(spec: TrialSpec, ctx: TrialContext, sampled: dict) -> None:
    """The trial's run config with a search sample's values (``train.lr``...) on top."""
    name, run_ctx = _run_context(spec, ctx, sampled)
    job = TrainJob(
        run=apply_changes(spec.run, sampled),
        corpus=ctx.corpus,
        bank_source=ctx.bank_source,
        ctx=run_ctx,
        init_from=checkpoint_of(ctx, spec.donor) if spec.donor else None,
        graft=spec.graft,
        eval_bytes=ctx.eval_bytes,
        run_name=name,
    )
    train_aleph(job, progress=print, tune=True)


def _svae(spec: TrialSpec, ctx: TrialContext, sampled: dict) -> None:
    """The SVAE run and its patch-shuffled control (§14) in one child run; the verdict's
    numbers (``verdict/...``, ``verdict/control/...``) go to Tune when both are done."""
    name, run_ctx = _run_context(spec, ctx, sampled)
    job = SVAEJob(
        data=ctx.svae_data,
        run=apply_changes(spec.svae, sampled),
        ctx=run_ctx,
        control=True,
        run_name=name,
    )
    out = train_svae_job(job, progress=print)
    _tune_report(verdict_metrics(out["verdict"]))


def _source(spec: TrialSpec, ctx: TrialContext):
    """``(model, inputs)``: the source trial's model and the local directory of its run's
    inputs (``eval_windows.safetensors``, ``heldout.npy``...)."""
    location = checkpoint_of(ctx, spec.source)
    if is_uri(location):  # published with its run's inputs beside it (pipelines.run_storage)
        path = Path(readable(location, "--data-dir"))
        inputs = Path(readable(location.rsplit("/", 1)[0] + "/inputs", "--data-dir"))
    else:
        path = Path(location)
        inputs = path.parent
    model, _, _ = load_checkpoint(path)
    return model, inputs


def _windows(inputs: Path) -> list:
    """The fixed held-out windows the source trial was scored on, in batches of 16."""
    return list(load_file(str(inputs / "eval_windows.safetensors"))["windows"].split(16))


def _child_logger(spec: TrialSpec, ctx: TrialContext, params: dict) -> RunLogger:
    name = trial_run_name(ctx.sweep, spec.key)
    uri = ctx.run.tracking_uri
    return open_run(  # a retried trial continues its run under this sweep's parent
        uri,
        ctx.experiment_id,
        name,
        resume=True,
        run_id=find_run(uri, ctx.experiment_id, name, ctx.parent_run_id),
        tags=_tags(spec, ctx, {}),
        params=params,
        config=params,
    )


def _contrast(spec: TrialSpec, ctx: TrialContext, sampled: dict) -> None:
    model, inputs = _source(spec, ctx)
    batches = _windows(inputs)
    report = controller_contrast(model, batches, CONTRAST_OPS, CONTRAST_SEEDS)
    metrics = {"contrast/base_bpb": report.base_bpb}
    for row in report.rows():
        metrics[f"contrast/{row['op']}/delta_bpb"] = row["delta_bpb_mean"]
        metrics[f"contrast/{row['op']}/delta_bpb_std"] = row["delta_bpb_std"]
    params = {"source": str(checkpoint_of(ctx, spec.source)), "seeds": list(CONTRAST_SEEDS)}
    with _child_logger(spec, ctx, params) as logger:
        logger.log_metrics(metrics, 0)
        logger.log_dict({"rows": report.rows(), "base_bpb": report.base_bpb}, "contrast.json")
    _tune_report(metrics)


def _bank_swap(spec: TrialSpec, ctx: TrialContext, sampled: dict) -> None:
    """§13.4: the trained model on a bank of other vocabulary (``tune.banks``), no parameter
    changes; both banks scored on the source's held-out bytes, Δ paired over its targets."""
    model, inputs = _source(spec, ctx)
    path = ctx.swap_banks[swap_key(spec.bank, model.bank.size)]
    other = load_bank(path)
    held = np.load(inputs / "heldout.npy", allow_pickle=False)  # what its training scored
    result = bank_swap(model, other, held)
    metrics = result.metrics()
    prov = other.provenance
    params = {
        "source": str(checkpoint_of(ctx, spec.source)),
        "eval_bank": path,
        "eval_bank_corpus": (prov.get("corpus") or {}).get("uri", ""),
        "eval_bank_quotas": json.dumps(prov.get("quotas", "")),
    }
    with _child_logger(spec, ctx, params) as logger:
        logger.log_metrics(metrics, 0)
        logger.set_tags({"swap_verdict": result.delta.verdict()})
    _tune_report(metrics)
