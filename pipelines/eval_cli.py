"""``geolip eval aleph`` and ``geolip eval contrast``: held-out evaluation of a checkpoint.

Both read the held-out bytes from the corpus' byte shards (the same stream training scored), run
the library's single-process evaluation (``geolip.eval``, ``geolip.experiments.contrast``) and log
to MLflow: into the checkpoint's own run when its ``meta.json`` names one, else into a new run of
the ``geolip-eval`` experiment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipelines.cli import Command
from pipelines.train_cli import add_common_run_arguments


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint directory (e.g. runs/aleph/NAME/final)")
    p.add_argument("--corpus", required=True, help="corpus URI whose validation split is scored")
    p.add_argument("--eval-bytes", type=int, default=1_000_000, help="held-out bytes to score")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    add_common_run_arguments(p)


def _add_aleph(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--streams", type=int, default=8, help="parallel streams of the streamed regime")
    p.add_argument("--no-compressors", action="store_true", help="skip the compressor baselines")
    p.add_argument(
        "--prime-bytes", type=int, default=8_000_000,
        help="train bytes that prime the compressors (the last N; 0: no primed figures)",
    )  # fmt: skip


def _add_contrast(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--ops", default="permute,randomize,rotate", help="comma-separated ablations")
    p.add_argument("--seeds", type=int, default=3, help="seeds per ablation")
    p.add_argument("--scope", default="all", help="all | routing | head")
    p.add_argument("--windows", type=int, default=64, help="fixed held-out windows scored")


def heldout_bytes(corpus: str, data: Path, limit: int):
    """``(validation uint8[<=limit], shards)`` of ``corpus`` (shards built on first use)."""
    from pipelines.byte_shards import build_byte_shards, read_side
    from pipelines.errors import GeolipError

    shards = build_byte_shards(corpus, data, progress=lambda s: None)
    held = read_side(shards, "validation", limit=limit)
    if len(held) < 6:
        raise GeolipError(f"corpus {corpus!r} has no usable validation split ({len(held)} bytes)")
    return held, shards


def evaluate_aleph(model, held, train=None, streams: int = 8, compressors: bool = True) -> dict:
    """Windowed and streamed bits/byte of ``model`` on ``held`` and the compressors' figures."""
    from geolip.eval import bpb_streamed, bpb_windowed
    from pipelines.compress import compressor_baselines, results_table

    out = {"bytes": len(held)}
    for result in (bpb_windowed(model, held), bpb_streamed(model, held, n_streams=streams)):
        out[result.regime] = result.as_dict()
    if compressors:
        out["compressors"] = results_table(compressor_baselines(held.tobytes(), train))
    return out


def eval_checkpoint(checkpoint, corpus: str, data: Path, *, eval_bytes: int = 1_000_000,
                    prime_bytes: int = 8_000_000, streams: int = 8, compressors: bool = True,
                    log: bool = True, tracking_uri: str | None = None) -> dict:  # fmt: skip
    """Held-out bits/byte of the checkpoint next to the compressors (primed on the last
    ``prime_bytes`` of the train side), logged to its MLflow run unless ``log`` is false."""
    from geolip.checkpoint import load_checkpoint
    from pipelines.byte_shards import read_side

    checkpoint = Path(checkpoint).expanduser().resolve()
    model, run_cfg, meta = load_checkpoint(checkpoint)
    held, shards = heldout_bytes(corpus, data, eval_bytes)
    train = None
    if compressors and prime_bytes > 0:
        train = read_side(shards, "train")[-prime_bytes:].tobytes()
    result = evaluate_aleph(model, held, train, streams, compressors)
    result.update(checkpoint=str(checkpoint), corpus=corpus)
    if log:
        metrics = _aleph_metrics(result)
        result["mlflow_run_id"] = _log_eval(tracking_uri, meta, data, result, metrics)
    return result


def _run_aleph(args: argparse.Namespace) -> int:
    from pipelines.paths import data_dir

    result = eval_checkpoint(
        args.checkpoint, args.corpus, data_dir(args.data_dir), eval_bytes=args.eval_bytes,
        prime_bytes=args.prime_bytes, streams=args.streams, compressors=not args.no_compressors,
        log=not args.no_log, tracking_uri=args.tracking_uri,
    )  # fmt: skip
    _print_aleph(result, args.format)
    return 0


def _aleph_metrics(result: dict) -> dict:
    from pipelines.compress import metric_name

    metrics = {f"eval/bpb_{r}": result[r]["bpb"] for r in ("windowed", "streamed")}
    for row in result.get("compressors", []):
        metrics[f"eval/compress/{metric_name(row['name'])}/bpb"] = row["bpb"]
        if row.get("primed_bpb") is not None:
            metrics[f"eval/compress/{metric_name(row['name'])}/primed_bpb"] = row["primed_bpb"]
    return metrics


def _print_aleph(result: dict, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"held-out bits/byte: {result['bytes']:,} bytes of {result['corpus']}")
    for col in ("model", "regime", "bits/byte", "primed", "bytes scored", "dropped"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for regime in ("windowed", "streamed"):
        r = result[regime]
        table.add_row("AlephLM", regime, f"{r['bpb']:.4f}", "", f"{r['bytes_scored']:,}",
                      str(r["bytes_dropped"]))  # fmt: skip
    for row in result.get("compressors", []):
        primed = "" if row.get("primed_bpb") is None else f"{row['primed_bpb']:.4f}"
        table.add_row(
            row["name"], "whole", f"{row['bpb']:.4f}", primed, f"{row['bytes_in']:,}", "0"
        )
    Console().print(table)


def contrast_checkpoint(checkpoint, corpus: str, data: Path, *, eval_bytes: int = 1_000_000,
                        ops=("permute", "randomize", "rotate"), seeds: int = 3, scope: str = "all",
                        windows: int = 64, log: bool = True, tracking_uri: str | None = None):  # fmt: skip
    """Controller contrast of the checkpoint on fixed held-out windows; ``(result, report)``,
    logged (metrics, JSON and a bar plot) to its MLflow run unless ``log`` is false."""
    from geolip.checkpoint import load_checkpoint
    from geolip.data import fixed_eval_batches
    from geolip.experiments.contrast import controller_contrast

    checkpoint = Path(checkpoint).expanduser().resolve()
    model, run_cfg, meta = load_checkpoint(checkpoint)
    held, _ = heldout_bytes(corpus, data, eval_bytes)
    batches = fixed_eval_batches(held, windows, run_cfg.model.seq_trigrams, batch=16)
    report = controller_contrast(model, batches, tuple(ops), tuple(range(seeds)), scope)
    result = {"checkpoint": str(checkpoint), "corpus": corpus, "base_bpb": report.base_bpb,
              "scope": report.scope, "rows": report.rows()}  # fmt: skip
    if log:
        metrics = {"contrast/base_bpb": report.base_bpb}
        for row in report.rows():
            metrics[f"contrast/{scope}/{row['op']}/delta_bpb"] = row["delta_bpb_mean"]
            metrics[f"contrast/{scope}/{row['op']}/delta_bpb_std"] = row["delta_bpb_std"]
        result["mlflow_run_id"] = _log_eval(tracking_uri, meta, data, result, metrics, report)
    return result, report


def _run_contrast(args: argparse.Namespace) -> int:
    from pipelines.paths import data_dir

    ops = tuple(op.strip() for op in args.ops.split(",") if op.strip())
    result, report = contrast_checkpoint(
        args.checkpoint, args.corpus, data_dir(args.data_dir), eval_bytes=args.eval_bytes,
        ops=ops, seeds=args.seeds, scope=args.scope, windows=args.windows, log=not args.no_log,
        tracking_uri=args.tracking_uri,
    )  # fmt: skip
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(report.as_markdown())
    return 0


def _log_eval(
    tracking_uri, meta: dict, data: Path, result: dict, metrics: dict, report=None
) -> str:
    """Log to the checkpoint's MLflow run (or a new ``geolip-eval`` run); returns the run id."""
    from pipelines.tracking import (
        RunLogger,
        artifact_root,
        check_tracking,
        ensure_experiment,
        resolve_tracking_uri,
        start_run,
    )

    run_id, uri = meta.get("mlflow_run_id"), meta.get("tracking_uri")
    if tracking_uri or not (run_id and uri):
        uri, run_id = resolve_tracking_uri(tracking_uri, data), None
    check_tracking(uri)
    if run_id:
        logger = RunLogger(uri, run_id)
    else:
        experiment = ensure_experiment(uri, "geolip-eval", artifact_root(uri, data))
        name = f"eval-{Path(result['checkpoint']).parent.name}"
        logger = start_run(uri, experiment, name, tags={"checkpoint": result["checkpoint"]})
    step = int(meta.get("step", 0))
    logger.log_metrics(metrics, step)
    from pipelines.plots import bars_figure

    kind = "contrast" if report is not None else "eval"
    logger.log_dict(result, f"{kind}.json")
    if report is not None:
        rows = [{"op": r["op"], "delta": r["delta_bpb_mean"], "std": r["delta_bpb_std"]}
                for r in report.rows()]  # fmt: skip
        title = f"controller contrast ({report.scope}): base {report.base_bpb:.3f} bpb"
        logger.log_figure(bars_figure(rows, "op", "delta", "std", title, "Δ bits/byte"),
                          f"contrast_{report.scope}.png")  # fmt: skip
    else:
        rows = [{"name": f"AlephLM {r}", "bpb": result[r]["bpb"]} for r in ("windowed", "streamed")]
        rows += [{"name": c["name"], "bpb": c["bpb"]} for c in result.get("compressors", [])]
        logger.log_figure(bars_figure(rows, "name", "bpb", title="held-out bits/byte",
                                      ylabel="bits/byte"), "eval_bpb.png")  # fmt: skip
    logger.flush()
    if not meta.get("mlflow_run_id") or tracking_uri:
        logger.finish()
    return logger.run_id


COMMANDS = [
    Command("eval aleph", "held-out bits/byte of a checkpoint next to the compressors",
            _add_aleph, _run_aleph),
    Command("eval contrast", "controller contrast of a checkpoint (permute/randomize/rotate)",
            _add_contrast, _run_contrast),
]  # fmt: skip
