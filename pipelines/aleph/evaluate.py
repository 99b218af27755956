"""Held-out evaluation of an AlephLM checkpoint: bits/byte next to the compressors, and the
controller contrast (``geolip eval aleph``, ``geolip eval contrast``, the demo's eval stage).

Both read the held-out bytes from the corpus' byte shards (the same stream training scored), run
the library's single-process evaluation (``geolip.aleph.bpb``, ``geolip.aleph.experiments``) and
log to MLflow: into the checkpoint's own run when its ``meta.json`` names one, else into a new run
of the ``geolip-eval`` experiment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geolip.aleph.bpb import bpb_streamed, bpb_windowed, segment_count, window_count
from geolip.aleph.checkpoint import load_checkpoint
from geolip.aleph.data import fixed_eval_batches
from geolip.aleph.experiments.contrast import ContrastReport, controller_contrast
from pipelines.byte_shards import ByteShards, build_byte_shards, read_side
from pipelines.compress import compressor_baselines, results_table, row_metrics
from pipelines.errors import GeolipError
from pipelines.kn import DEFAULT_ORDERS, kn_metrics, kn_rows
from pipelines.plots import bars_figure
from pipelines.progress import bar
from pipelines.tracking import (
    RunLogger,
    artifact_root,
    check_tracking,
    ensure_experiment,
    resolve_tracking_uri,
    start_run,
)

EVAL_EXPERIMENT = "geolip-eval"
CONTRAST_OPS = ("permute", "randomize", "rotate")
MIN_HELDOUT_BYTES = 6
"""The fewest held-out bytes a regime scores: 2 trigrams, one of context and one target."""


def check_eval_args(eval_bytes: int, streams: int = 1, prime_bytes: int = 0) -> None:
    """The checks of ``eval_checkpoint``'s numbers that need neither the model nor the data."""
    if eval_bytes < MIN_HELDOUT_BYTES:
        raise GeolipError(
            f"--eval-bytes must be >= {MIN_HELDOUT_BYTES} (the evaluation scores at least 2 "
            f"trigrams), got {eval_bytes}"
        )
    if streams < 1:
        raise GeolipError(f"--streams must be >= 1, got {streams}")
    if eval_bytes < MIN_HELDOUT_BYTES * streams:
        raise GeolipError(
            f"--eval-bytes {eval_bytes} is too few for --streams {streams}: each stream scores at "
            f"least 2 trigrams, so --eval-bytes must be >= {MIN_HELDOUT_BYTES * streams}"
        )
    if prime_bytes < 0:
        raise GeolipError(f"--prime-bytes must be >= 0, got {prime_bytes}")


def check_contrast_args(eval_bytes: int, ops, seeds: int, windows: int) -> None:
    """The checks of ``contrast_checkpoint``'s arguments that need neither model nor data."""
    from geolip.aleph.experiments.names import OPS

    check_eval_args(eval_bytes)
    bad = [op for op in ops if op not in OPS]
    if bad or not ops:
        what = f"unknown ablation {bad[0]!r}" if bad else "no ablation given"
        raise GeolipError(f"--ops: {what}; valid ones: {', '.join(OPS)}")
    if seeds < 1:
        raise GeolipError(f"--seeds must be >= 1, got {seeds}")
    if windows < 1:
        raise GeolipError(f"--windows must be >= 1, got {windows}")


def check_corpus(corpus: str) -> None:
    """Refuse a malformed corpus URI or a ``file:`` corpus naming no file before anything is
    loaded or written (``CorpusError``, one line)."""
    from atlas.corpus import parse_uri
    from atlas.corpus.files import resolve_paths

    spec = parse_uri(corpus)
    if spec.scheme == "file":
        resolve_paths(spec.target, corpus)


def heldout_bytes(corpus: str, data: Path, limit: int) -> tuple[np.ndarray, ByteShards]:
    """``(validation uint8[<=limit], shards)`` of ``corpus`` (shards built on first use)."""
    shards = build_byte_shards(corpus, data, progress=lambda s: None)
    held = read_side(shards, "validation", limit=limit)
    if len(held) < 6:
        raise GeolipError(f"corpus {corpus!r} has no usable validation split ({len(held)} bytes)")
    return held, shards


def evaluate_aleph(model, held, train=None, streams: int = 8, compressors: bool = True) -> dict:
    """Windowed and streamed bits/byte of ``model`` on ``held`` and the compressors' figures."""
    out, T = {"bytes": len(held)}, model.cfg.seq_trigrams
    with bar(window_count(len(held), T), "bpb windowed", "window") as b:
        windowed = bpb_windowed(model, held, progress=b.update)
    with bar(segment_count(len(held), streams, T), "bpb streamed", "segment") as b:
        streamed = bpb_streamed(model, held, n_streams=streams, progress=b.update)
    for result in (windowed, streamed):
        out[result.regime] = result.as_dict()
    if compressors:
        out["compressors"] = results_table(compressor_baselines(held.tobytes(), train))
    return out


def eval_checkpoint(
    checkpoint,
    corpus: str,
    data: Path,
    *,
    eval_bytes: int = 1_000_000,
    prime_bytes: int = 8_000_000,
    streams: int = 8,
    compressors: bool = True,
    kn_orders: tuple[int, ...] = DEFAULT_ORDERS,
    log: bool = True,
    tracking_uri: str | None = None,
) -> dict:
    """Held-out bits/byte of the checkpoint next to the compressors (primed on the last
    ``prime_bytes`` of the train side) and Kneser-Ney of ``kn_orders`` (none: ``()``) on the same
    bytes, logged to its MLflow run unless ``log`` is false."""
    check_eval_args(eval_bytes, streams, prime_bytes)
    check_corpus(corpus)
    checkpoint = Path(checkpoint).expanduser().resolve()
    model, _, meta = load_checkpoint(checkpoint)
    held, shards = heldout_bytes(corpus, data, eval_bytes)
    train = None
    if compressors and prime_bytes > 0:
        train = read_side(shards, "train")[-prime_bytes:].tobytes()
    result = evaluate_aleph(model, held, train, streams, compressors)
    if kn_orders:
        result["kneser_ney"] = kn_rows(corpus, data, shards, held, kn_orders, progress=False)
    result.update(checkpoint=str(checkpoint), corpus=corpus)
    if log:
        logger = _eval_logger(tracking_uri, meta, data, result["checkpoint"])
        _log_eval(logger, meta, result)
        result["mlflow_run_id"] = logger.run_id
    return result


def contrast_checkpoint(
    checkpoint,
    corpus: str,
    data: Path,
    *,
    eval_bytes: int = 1_000_000,
    ops=CONTRAST_OPS,
    seeds: int = 3,
    scope: str = "all",
    windows: int = 64,
    log: bool = True,
    tracking_uri: str | None = None,
) -> tuple[dict, ContrastReport]:
    """Controller contrast of the checkpoint on fixed held-out windows; ``(result, report)``,
    logged (metrics, JSON and a bar plot) to its MLflow run unless ``log`` is false."""
    check_contrast_args(eval_bytes, tuple(ops), seeds, windows)
    check_corpus(corpus)
    checkpoint = Path(checkpoint).expanduser().resolve()
    model, run_cfg, meta = load_checkpoint(checkpoint)
    need = 3 * (run_cfg.model.seq_trigrams + 1)  # one window: T inputs and their targets
    if eval_bytes < need:
        raise GeolipError(
            f"--eval-bytes {eval_bytes} is shorter than one contrast window of this model "
            f"({run_cfg.model.seq_trigrams + 1} trigrams, {need} bytes); use --eval-bytes >= {need}"
        )
    held, _ = heldout_bytes(corpus, data, eval_bytes)
    batches = fixed_eval_batches(held, windows, run_cfg.model.seq_trigrams, batch=16)
    scored = sum(len(w) for w in batches) * (1 + len(ops) * seeds)  # the base and each ablation
    with bar(scored, "controller contrast", "window") as b:
        report = controller_contrast(
            model, batches, tuple(ops), tuple(range(seeds)), scope, progress=b.update
        )
    result = {
        "checkpoint": str(checkpoint),
        "corpus": corpus,
        "base_bpb": report.base_bpb,
        "scope": report.scope,
        "rows": report.rows(),
    }
    if log:
        logger = _eval_logger(tracking_uri, meta, data, result["checkpoint"])
        _log_contrast(logger, meta, result, report)
        result["mlflow_run_id"] = logger.run_id
    return result, report


def eval_metrics(result: dict) -> dict:
    """The MLflow metrics of an ``eval_checkpoint`` result."""
    metrics = {f"eval/bpb_{r}": result[r]["bpb"] for r in ("windowed", "streamed")}
    metrics.update(row_metrics(result.get("compressors", [])))
    metrics.update(kn_metrics(result.get("kneser_ney", [])))
    return metrics


def contrast_metrics(report: ContrastReport) -> dict:
    """The MLflow metrics of a controller contrast: base bpb, Δ mean and std per ablation."""
    metrics = {"contrast/base_bpb": report.base_bpb}
    for row in report.rows():
        metrics[f"contrast/{report.scope}/{row['op']}/delta_bpb"] = row["delta_bpb_mean"]
        metrics[f"contrast/{report.scope}/{row['op']}/delta_bpb_std"] = row["delta_bpb_std"]
    return metrics


def _eval_logger(tracking_uri: str | None, meta: dict, data: Path, checkpoint: str) -> RunLogger:
    """The checkpoint's own MLflow run (or, with ``tracking_uri`` or no run recorded, a new
    ``geolip-eval`` run)."""
    run_id, uri = meta.get("mlflow_run_id"), meta.get("tracking_uri")
    if tracking_uri or not (run_id and uri):
        uri, run_id = resolve_tracking_uri(tracking_uri, data), None
    check_tracking(uri)
    if run_id:
        return RunLogger(uri, run_id)
    experiment = ensure_experiment(uri, EVAL_EXPERIMENT, artifact_root(uri, data))
    name = f"eval-{Path(checkpoint).parent.name}"
    config = {"checkpoint": checkpoint, "model_config_hash": meta.get("config_hash")}
    return start_run(uri, experiment, name, tags={"checkpoint": checkpoint}, config=config)


def _log_eval(logger: RunLogger, meta: dict, result: dict) -> None:
    logger.log_metrics(eval_metrics(result), int(meta.get("step", 0)))
    logger.log_dict(result, "eval.json")
    rows = [{"name": f"AlephLM {r}", "bpb": result[r]["bpb"]} for r in ("windowed", "streamed")]
    rows += [{"name": c["name"], "bpb": c["bpb"]} for c in result.get("compressors", [])]
    rows += [{"name": k["name"], "bpb": k["bpb"]} for k in result.get("kneser_ney", [])]
    fig = bars_figure(rows, "name", "bpb", title="held-out bits/byte", ylabel="bits/byte")
    logger.log_figure(fig, "eval_bpb.png")
    _close(logger, meta)


def _log_contrast(logger: RunLogger, meta: dict, result: dict, report: ContrastReport) -> None:
    logger.log_metrics(contrast_metrics(report), int(meta.get("step", 0)))
    logger.log_dict(result, "contrast.json")
    rows = [
        {"op": r["op"], "delta": r["delta_bpb_mean"], "std": r["delta_bpb_std"]}
        for r in report.rows()
    ]
    title = f"controller contrast ({report.scope}): base {report.base_bpb:.3f} bpb"
    fig = bars_figure(rows, "op", "delta", "std", title, "Δ bits/byte")
    logger.log_figure(fig, f"contrast_{report.scope}.png")
    _close(logger, meta)


def _close(logger: RunLogger, meta: dict) -> None:
    """Flush; finish the run only if it is ours (a checkpoint's training run stays as it is)."""
    logger.flush()
    if logger.run_id != meta.get("mlflow_run_id"):
        logger.finish()
