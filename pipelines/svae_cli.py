"""``geolip train svae``: the SVAE companion on Ray Train with its verdict in MLflow."""

from __future__ import annotations

import argparse

from pipelines.cli import Command
from pipelines.train_cli import add_common_run_arguments


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="features:DIR | images:structured | text:CORPUS_URI")  # fmt: skip
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help="model.* (GeoConfig) or train.* override")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers")
    p.add_argument("--no-control", action="store_true", help="skip the patch-shuffled control")
    p.add_argument("--resume", action="store_true", help="continue an existing run")
    p.add_argument("--experiment", default="geolip-svae", help="MLflow experiment name")
    add_common_run_arguments(p)


def _run(args: argparse.Namespace) -> int:
    import json

    from pipelines.svae_train import SVAEJob, train_svae_job

    job = SVAEJob(data=args.data, overrides=tuple(args.overrides), workers=args.workers,
                  resume=args.resume, control=not args.no_control, experiment=args.experiment,
                  tracking_uri=args.tracking_uri, data_dir=args.data_dir)  # fmt: skip
    out = train_svae_job(job)
    v = out["verdict"]
    keys = ("recon_cos_external", "recon_cos_internal", "baseline_cos", "frame_deviation",
            "frac_in_envelope", "alpha_init", "alpha_final", "ablation_gain", "mechanism")  # fmt: skip
    print(json.dumps({k: v[k] for k in keys} | {"control": v.get("control")}, indent=1))
    print(f"checkpoint: {out['checkpoint']}\nMLflow run {out['run_id']}")
    return 0


COMMANDS = [Command("train svae", "train the SVAE companion on Ray Train (verdict in MLflow)",
                    _add, _run)]  # fmt: skip
