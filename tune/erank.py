"""The two-hemisphere law (model card): the codebook's effective rank over training, per arm.

Routing pressure is rank-destructive (a head that does not score through the codebook, under
streamed long context, drives it toward low rank); prediction pressure is rank-constructive (a
kernel or apmix head builds rank). Every AlephLM run logs the statute gauge's ``gauge/erank`` at
each ``log_every``; here each run's trajectory gets a least-squares slope (erank per 1000 steps),
and each arm the mean slope over its seeds with a standard error ``[proposed]``: over seeds with
two or more (``std / sqrt(S)``), else the regression's own (residual) SE of the one run, which
ignores the serial correlation of a trajectory and so understates the noise. The sign is
``rises`` / ``falls`` beyond 2 SE, else ``flat (within noise)``.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from pipelines.plots import new_figure
from pipelines.tracking import metric_history
from tune.cells import fmt

ERANK = "gauge/erank"
PER = 1000
"""Slopes are erank per this many steps."""


def run_slope(points: list[tuple[int, float]]) -> tuple[float, float]:
    """``(slope, its OLS standard error)`` per ``PER`` steps of ``points: [(step, erank)]``; NaN
    with fewer than 2 (SE: 3) distinct steps."""
    steps = sorted(dict(points).items())  # a re-logged step keeps its last value
    n = len(steps)
    if n < 2:
        return math.nan, math.nan
    xs, ys = [s / PER for s, _ in steps], [v for _, v in steps]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return math.nan, math.nan
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    if n < 3:
        return slope, math.nan
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    return slope, math.sqrt(resid / (n - 2) / sxx)


def erank_histories(uri: str, rows: list[dict]) -> dict[str, list[list[tuple[int, float]]]]:
    """Per arm, the ``gauge/erank`` trajectory of each finished train trial."""
    out: dict[str, list] = defaultdict(list)
    for r in rows:
        if r["kind"] == "train" and r["status"] == "FINISHED":
            points = metric_history(uri, r["run_id"], ERANK)
            if points:
                out[r["arm"]].append(points)
    return dict(out)


def erank_table(histories: dict[str, list[list[tuple[int, float]]]]) -> list[dict]:
    """One row per arm: hemisphere, n, erank at the first and last logged step (means over
    seeds), slope ± SE per ``PER`` steps and its sign."""
    table = []
    for arm, runs in sorted(histories.items()):
        slopes = [run_slope(p) for p in runs]
        values = [s for s, _ in slopes if math.isfinite(s)]
        slope = statistics.fmean(values) if values else math.nan
        if len(values) > 1:
            se = statistics.stdev(values) / math.sqrt(len(values))
        else:
            se = slopes[0][1] if slopes else math.nan
        table.append(
            {
                "arm": arm,
                "hemisphere": arm.partition("/")[0] if "/" in arm else "",
                "n": len(runs),
                "erank_first": statistics.fmean(_ends(p)[0] for p in runs),
                "erank_last": statistics.fmean(_ends(p)[1] for p in runs),
                "slope": slope,
                "slope_se": se,
                "sign": _sign(slope, se),
            }
        )
    return table


def _ends(points: list[tuple[int, float]]) -> tuple[float, float]:
    """erank at the first and the last logged step (a re-logged step: its last value)."""
    steps = sorted(dict(points).items())
    return steps[0][1], steps[-1][1]


def _sign(slope: float, se: float) -> str:
    if not math.isfinite(slope):
        return "—"
    if math.isfinite(se) and abs(slope) <= 2 * se:
        return "flat (within noise)"
    return "rises" if slope > 0 else "falls"


def erank_lines(table: list[dict]) -> list[str]:
    """The table as markdown."""
    lines = [
        "",
        f"codebook effective rank over training (slope: erank per {PER:,} steps, least squares):",
        "",
        "| arm | n | erank first → last | slope ± SE | sign |",
        "|---|---:|---|---|---|",
    ]
    for t in table:
        lines.append(
            f"| {t['arm']} | {t['n']} | {fmt(t['erank_first'], '.3f')} → "
            f"{fmt(t['erank_last'], '.3f')} | {fmt(t['slope'], '+.3f')} ± "
            f"{fmt(t['slope_se'], '.3f')} | {t['sign']} |"
        )
    return lines


def erank_figure(histories: dict[str, list[list[tuple[int, float]]]], table: list[dict]):
    """erank over steps, one line per arm (mean over seeds): routing dashed, prediction solid;
    the legend carries each arm's slope sign."""
    rows = {t["arm"]: t for t in table}
    fig = new_figure(7.0, 4.0)
    ax = fig.add_subplot()
    for arm, runs in sorted(histories.items()):
        by_step: dict[int, list[float]] = defaultdict(list)
        for points in runs:
            for step, value in dict(points).items():
                by_step[step].append(value)
        steps = sorted(by_step)
        style = "--" if arm.startswith("routing/") else "-"
        t = rows.get(arm, {})
        label = f"{arm} ({t.get('sign', '—')}, {fmt(t.get('slope'), '+.3f')}/{PER // 1000}k)"
        ax.plot(
            steps, [statistics.fmean(by_step[s]) for s in steps], style, marker=".", label=label
        )
    ax.set_xlabel("step")
    ax.set_ylabel("codebook effective rank")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.suptitle("two-hemisphere law: routing (dashed) vs prediction (solid)")
    return fig
