"""``geolip train svae``: the SVAE companion on Ray Train with its verdict in MLflow.

The edge of an SVAE job: its config is built here, once, from ``--data`` and ``--set``.
"""

from __future__ import annotations

import argparse
import json

from pipelines.capacity import add_capacity_arguments, capacity_settings
from pipelines.cli import (
    Command,
    add_common_run_arguments,
    add_set_argument,
    int_at_least,
)
from pipelines.system_metrics import add_system_metrics_argument, system_metrics_setting

VERDICT_KEYS = (
    "recon_cos_external",
    "recon_cos_internal",
    "baseline_cos",
    "frame_deviation",
    "frac_in_envelope",
    "alpha_init",
    "alpha_final",
    "ablation_gain",
    "mechanism",
)


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", required=True, help="features:DIR | images:structured | text:CORPUS_URI"
    )
    add_set_argument(p, "model.* (GeoConfig) or train.* override (repeatable)")
    p.add_argument(
        "--workers", type=int_at_least(1), default=1, help="data-parallel Ray Train workers"
    )
    add_capacity_arguments(p)
    p.add_argument(
        "--max-failures", type=int_at_least(0), default=2, help="worker-group restarts allowed"
    )
    p.add_argument("--no-control", action="store_true", help="skip the patch-shuffled control")
    p.add_argument("--resume", action="store_true", help="continue an existing run")
    add_system_metrics_argument(p)
    p.add_argument("--experiment", default="geolip-svae", help="MLflow experiment name")
    p.add_argument(
        "--register",
        default=None,
        metavar="NAME",
        help="register the logged model as a new version of the MLflow registered model NAME",
    )
    add_common_run_arguments(p)


def check_resume(ctx) -> None:
    """``--resume`` needs some SVAE run with a checkpoint in the data directory: refused here,
    before the data is loaded or the tracking store made (the driver checks the exact run once
    its name is known)."""
    from pipelines.errors import GeolipError
    from pipelines.run_storage import has_checkpoint

    results = ctx.data_dir / "ray_results"
    if ctx.resume and not any(has_checkpoint(d) for d in results.glob("svae-*")):
        raise GeolipError(
            f"--resume: no SVAE run under {results} has a checkpoint to resume from; start the "
            "run without --resume"
        )


def _run(args: argparse.Namespace) -> int:
    from pipelines.config_file import apply_config
    from pipelines.runtime import RunContext
    from pipelines.svae.data import run_config

    ctx = RunContext.create(
        args.experiment,
        args.data_dir,
        args.tracking_uri,
        workers=args.workers,
        **capacity_settings(args),
        max_failures=args.max_failures,
        resume=args.resume,
        system_metrics=system_metrics_setting(args),
    )
    run = apply_config(run_config(args.data), args.config_file, args.overrides)
    check_resume(ctx)
    from pipelines.svae.driver import SVAEJob, train_svae_job  # Ray: after the checks above

    job = SVAEJob(args.data, run, ctx, control=not args.no_control, register=args.register)
    out = train_svae_job(job)
    v = out["verdict"]
    print(json.dumps({k: v[k] for k in VERDICT_KEYS} | {"control": v.get("control")}, indent=1))
    print(f"checkpoint: {out['checkpoint']}\nMLflow run {out['run_id']}")
    model = out["model"]
    registered = f", registered as {model.registered}" if model.registered else ""
    print(f"logged model: {model.run_uri}{registered}")
    return 0


COMMANDS = [
    Command("train svae", "train the SVAE companion on Ray Train (verdict in MLflow)", _add, _run)
]
