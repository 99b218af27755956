"""Arms ranked on held-out bits/byte, with a paired Δ ± SE against their reference arm.

Every finished training logs the NLL of each of its held-out targets (``pipelines.aleph.heldout``):
the same targets for every trial of a sweep (one corpus, one ``eval_bytes``). An arm's figure is
the mean over its seeds; its Δ against the reference is paired target by target and, where both
have them, seed by seed; the standard error comes from 256 windows of the differences and the
seeds' spread (``geolip.paired``). A Δ within 2 SE reads "within noise". Runs from before the
artifact fall back to their ``heldout_bpb_windowed`` metric (a Δ then has no SE).

``val_bpb`` (the fixed windows the training curve is drawn on) stays in the table as the curve's
last point; it does not rank.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

from geolip.paired import Estimate, bits_per_byte, estimate, paired_delta

HELDOUT_METRIC = "heldout_bpb_windowed"


def attach_heldout(uri: str, rows: list[dict]) -> None:
    """Add ``bits`` (``float64[n]`` bits/byte per held-out target, or None) to each finished
    train row, read from its MLflow run."""
    from pipelines.aleph.heldout import read_target_nll

    for r in rows:
        if r["kind"] == "train" and r["status"] == "FINISHED":
            nll = read_target_nll(uri, r["run_id"])
            r["bits"] = None if nll is None else bits_per_byte(nll)


def _finished(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["status"] == "FINISHED"]


def _by_seed(runs: list[dict]) -> dict[str, np.ndarray] | None:
    """``{seed: bits}`` of the finished runs, or None unless every one has its targets."""
    done = _finished(runs)
    if not done or any(r.get("bits") is None for r in done):
        return None
    out: dict[str, np.ndarray] = {}
    for r in done:
        key = str(r.get("seed", ""))
        out[key if key not in out else f"{key}:{r['run_id']}"] = r["bits"]
    return out


def _metric_mean(runs: list[dict]) -> float:
    values = [
        r["metrics"][HELDOUT_METRIC] for r in _finished(runs) if HELDOUT_METRIC in r["metrics"]
    ]
    return statistics.fmean(values) if values else math.nan


def heldout_columns(runs: list[dict]) -> dict:
    """``heldout_bpb``, ``heldout_se`` and the ``blocks`` (windows) the SE rests on."""
    seeds = _by_seed(runs)
    if seeds is None:
        return {"heldout_bpb": _metric_mean(runs), "heldout_se": math.nan, "blocks": 0}
    try:
        est = estimate(seeds)
    except ValueError:  # seeds of one arm scored different targets (different --eval-bytes)
        return {"heldout_bpb": _metric_mean(runs), "heldout_se": math.nan, "blocks": 0}
    return {"heldout_bpb": est.mean, "heldout_se": est.se, "blocks": est.blocks}


def delta_columns(runs: list[dict], ref_runs: list[dict], prefix: str = "delta") -> dict:
    """``{prefix}``, ``{prefix}_se`` and ``{prefix}_verdict`` of the arm against ``ref_runs``."""
    arm, ref = _by_seed(runs), _by_seed(ref_runs)
    est: Estimate | None = None
    if arm is not None and ref is not None:
        try:
            est = paired_delta(arm, ref)
        except ValueError:  # scored different targets: only the means can be compared
            est = None
    if est is None:
        diff = _metric_mean(runs) - _metric_mean(ref_runs)
        return {prefix: diff, f"{prefix}_se": math.nan, f"{prefix}_verdict": ""}
    return {prefix: est.mean, f"{prefix}_se": est.se, f"{prefix}_verdict": est.verdict()}


def rank(table: list[dict]) -> list[dict]:
    """``table`` sorted by held-out bits/byte (arms without one last, by name), ranks set."""

    def key(t: dict):
        bpb = t.get("heldout_bpb", math.nan)
        return (math.isnan(bpb), bpb if not math.isnan(bpb) else 0.0, t["arm"])

    ordered = sorted(table, key=key)
    for i, t in enumerate(ordered, 1):
        t["rank"] = i if not math.isnan(t.get("heldout_bpb", math.nan)) else None
    return ordered


def noise_note(table: list[dict]) -> str:
    """The line under the table: what the figures rest on and what "within noise" means."""
    blocks = max((t.get("blocks", 0) for t in table), default=0)
    if not blocks:
        return (
            "held-out bits/byte: the runs' heldout_bpb_windowed metric (no per-target NLL "
            "logged: Δ without SE)"
        )
    return (
        f"held-out bits/byte: the windowed regime on the same held-out bytes for every run; SE "
        f"over {blocks} windows of them and over seeds (paired with the reference where both "
        "have them); Δ within 2 SE: within noise. val bpb: the training curve's last point"
    )
