"""The ``svae`` program's verdict table (svae.md §14): mechanism A/B per lens rung, over seeds.

Each SVAE trial logs its verdict's numbers (``pipelines.svae.driver.verdict_metrics``): on its
data (``verdict/...``) and on the patch-shuffled control (``verdict/control/...``). Per rung and
data, the table pools the seeds as §14 asks: Δα = α(final) − α(0) as a mean with its standard
error, the ablation gain g with its spread over seeds, and the mechanism of the pooled figures
(``geolip.svae.mechanism.classify_mechanism``: A needs Δα ≥ 0.005 and g > 2σ of g over the
seeds; B needs |Δα| ≤ 0.002 and |g| ≤ 1% of the trained MSE). Each seed's own verdict (its tag)
is shown beside it. §14 predicts A on structured patches and B on their shuffled copy.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict

from geolip.svae.mechanism import ALPHA_ENGAGED, classify_mechanism
from pipelines.plots import bars_figure
from tune.cells import fmt

PATCHES = (("data", "verdict/", "mechanism"), ("shuffled", "verdict/control/", "control_mechanism"))
"""Each trial's two fits: (label, metric prefix, verdict tag)."""


def svae_table(rows: list[dict]) -> list[dict]:
    """One row per lens rung and patches (``data`` / ``shuffled``), rungs by ``D_lens``."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "svae":
            by_arm[r["arm"]].append(r)
    table = []
    for arm in sorted(by_arm, key=_rung):
        runs = by_arm[arm]
        done = [r for r in runs if r["status"] == "FINISHED"]
        for label, prefix, tag in PATCHES:
            ms = [r["metrics"] for r in done if f"{prefix}alpha_delta" in r["metrics"]]
            row = {"arm": arm, "patches": label, "n": len(ms)}
            row["failed"] = sum(r["status"] == "FAILED" for r in runs)
            row.update(_pooled(ms, prefix))
            row["per_seed"] = _counts(r.get(tag, "") for r in done)
            table.append(row)
    return table


def _rung(arm: str) -> tuple[int, str]:
    digits = arm.rpartition("/d")[2]
    return (int(digits) if digits.isdigit() else 1 << 30, arm)


def _pooled(ms: list[dict], prefix: str) -> dict:
    """Means over seeds, Δα's standard error, g's sample std and the pooled mechanism."""

    def values(key: str) -> list[float]:
        return [m[prefix + key] for m in ms if prefix + key in m]

    out = {}
    for key in ("alpha_final", "alpha_delta", "ablation_gain", "mse_external"):
        v = values(key)
        out[key] = statistics.fmean(v) if v else math.nan
        out[f"{key}_std"] = statistics.stdev(v) if len(v) > 1 else math.nan
    out["recon_cos"] = _mean(values("recon_cos_external"))
    n = len(ms)
    out["alpha_delta_se"] = out["alpha_delta_std"] / math.sqrt(n) if n > 1 else math.nan
    out["mechanism"] = ""
    if n:
        std = out["ablation_gain_std"]
        out["mechanism"] = classify_mechanism(
            out["alpha_delta"],
            out["ablation_gain"],
            None if math.isnan(std) else std,
            mse_trained=out["mse_external"],
        )
    return out


def _mean(v: list[float]) -> float:
    return statistics.fmean(v) if v else math.nan


def _counts(verdicts) -> str:
    """``A ×2, indeterminate ×1``: each seed's own verdict."""
    counts = Counter(v for v in verdicts if v)
    return ", ".join(f"{v} ×{n}" for v, n in sorted(counts.items()))


def svae_verdicts(table: list[dict]) -> list[dict]:
    """Per rung: the pooled mechanism on the data and on the shuffled control, and whether that
    is §14's prediction (A on structured patches, B on shuffled ones)."""
    by_arm: dict[str, dict] = defaultdict(dict)
    for t in table:
        by_arm[t["arm"]][t["patches"]] = t["mechanism"]
    out = []
    for arm, m in by_arm.items():
        data, shuffled = m.get("data", ""), m.get("shuffled", "")
        if not data or not shuffled:
            holds = "no finished runs"
        elif data == "A" and shuffled == "B":
            holds = "as predicted (A on the data, B shuffled)"
        elif data == "A":
            holds = f"α engages on both (shuffled: {shuffled})"
        else:
            holds = f"not engaged on the data ({data})"
        out.append({"arm": arm, "data": data, "shuffled": shuffled, "verdict": holds})
    return out


def svae_lines(table: list[dict], verdicts: list[dict]) -> list[str]:
    lines = [
        "",
        f"SVAE mechanism A/B (svae.md §14; Δα = α(final) − α(0), A needs Δα ≥ {ALPHA_ENGAGED} "
        "and g > 2σ of g over seeds; B |Δα| ≤ 0.002 and |g| ≤ 1% of the MSE):",
        "",
        "| rung | patches | n | failed | α final | Δα ± SE | ablation gain g (σ over seeds) "
        "| recon cos | MSE | mechanism | per seed |",
        "|---|---|---:|---:|---:|---|---|---:|---:|---|---|",
    ]
    for t in table:
        delta = fmt(t["alpha_delta"], "+.5f")
        if not math.isnan(t["alpha_delta_se"]):
            delta += f" ± {fmt(t['alpha_delta_se'], '.5f')}"
        gain = fmt(t["ablation_gain"], "+.2e")
        if not math.isnan(t["ablation_gain_std"]):
            gain += f" (σ {fmt(t['ablation_gain_std'], '.1e')})"
        lines.append(
            f"| {t['arm']} | {t['patches']} | {t['n']} | {t['failed']} | "
            f"{fmt(t['alpha_final'], '.5f')} | {delta} | {gain} | {fmt(t['recon_cos'])} | "
            f"{fmt(t['mse_external'], '.2e')} | {t['mechanism'] or '—'} | {t['per_seed'] or '—'} |"
        )
    lines += ["", "| rung | on the data | shuffled | §14 |", "|---|---|---|---|"]
    lines += [
        f"| {v['arm']} | {v['data'] or '—'} | {v['shuffled'] or '—'} | {v['verdict']} |"
        for v in verdicts
    ]
    return lines


def svae_figure(table: list[dict]):
    """Δα per rung and patches with 2 SE error bars, against the engagement threshold."""
    bars = [
        {
            "bar": f"{t['arm']} {t['patches']}",
            "delta": t["alpha_delta"],
            "two_se": 2 * t["alpha_delta_se"] if not math.isnan(t["alpha_delta_se"]) else None,
        }
        for t in table
    ]
    title = f"SVAE: Δα per lens rung (error bars: 2 SE over seeds; dashed: A at {ALPHA_ENGAGED})"
    return bars_figure(bars, "bar", "delta", "two_se", title, "Δα", baseline=ALPHA_ENGAGED)
