"""``geolip train aleph``: distributed AlephLM training on Ray Train, tracked in MLflow."""

from __future__ import annotations

import argparse

from pipelines.cli import Command


def add_common_run_arguments(p: argparse.ArgumentParser) -> None:
    """Flags every tracked command shares: where data and the MLflow store live."""
    p.add_argument(
        "--data-dir", default=None, help="data directory (default $GEOLIP_DATA or ./data)"
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else SQLite under the data dir)",
    )


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", required=True, help="corpus URI (hf:, file:, builtin:)")
    p.add_argument("--preset", default="tiny", help="tiny | small | calib23m")
    p.add_argument(
        "--head", default="pmix", help="byte | kernel | pmix | pmix8 | apmix | apmix_free"
    )
    p.add_argument("--bank", default=None, help="trigram bank file (default: cut from the corpus)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set train.steps=500 (repeatable)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="data-parallel Ray Train workers")
    p.add_argument("--gpu", choices=("auto", "on", "off"), default="auto", help="use GPUs")
    p.add_argument(
        "--checkpoint-every", type=int, default=0, help="steps between checkpoints (default: 1/5)"
    )
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts allowed")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    p.add_argument("--init-from", default=None, help="warm-start from this donor checkpoint")
    p.add_argument(
        "--graft", default="none", help="how the donor maps: none | depth | mixture | retrofit"
    )
    p.add_argument("--experiment", default="geolip-aleph", help="MLflow experiment name")
    p.add_argument("--eval-bytes", type=int, default=1_000_000, help="held-out bytes to score")
    p.add_argument("--name", default=None, help="run name (default: from config hash and seed)")
    add_common_run_arguments(p)


def job_from_args(args: argparse.Namespace):
    from pipelines.aleph_job import TrainJob

    gpu = {"auto": None, "on": True, "off": False}[args.gpu]
    return TrainJob(
        corpus=args.corpus, preset=args.preset, head=args.head, overrides=tuple(args.overrides),
        bank=args.bank, workers=args.workers, use_gpu=gpu, checkpoint_every=args.checkpoint_every,
        max_failures=args.max_failures, init_from=args.init_from, graft=args.graft,
        resume=args.resume, experiment=args.experiment, tracking_uri=args.tracking_uri,
        data_dir=args.data_dir, eval_bytes=args.eval_bytes, run_name=args.name,
    )  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from pipelines.aleph_train import train_aleph

    console = Console()
    outcome = train_aleph(job_from_args(args), progress=console.print)
    final = outcome.verdict["final"]
    rows = [(k, final[k]) for k in ("bpb", "val_bpb", "heldout_bpb_windowed") if k in final]
    rows += [(k, final[k]) for k in ("heldout_bpb_streamed", "tokens_per_s") if k in final]
    for key, value in rows:
        console.print(f"  {key:<22} {value:.4f}" if value < 100 else f"  {key:<22} {value:,.0f}")
    console.print(f"checkpoint: {outcome.checkpoint}")
    console.print(f"MLflow run {outcome.run_id} in {outcome.tracking_uri}")
    return 0


COMMANDS = [Command("train aleph", "train AlephLM on Ray Train, tracked in MLflow", _add, _run)]
