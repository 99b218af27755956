"""The summary of a sweep, read from MLflow alone (``geolip sweep report RUN_ID`` re-renders it).

Per arm: mean ± std over seeds of the final held-out bits/byte (``val_bpb``, on the fixed
windows every trial of a sweep shares), trials finished / failed, and the program's deltas
against its reference arm (the ones the model card reports). The ``contrast`` program gets its
own table: permute / randomize Δbpb per head and the closed-loop / open-loop dependence ratio;
the ``svae`` program its mechanism A/B table (``tune.svae_table``).
Markdown, CSV and JSON go to the parent run with PNG plots (bars with the seed spread, gauge
trajectories per arm), and the table is printed.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter, defaultdict

from pipelines.plots import bars_figure
from pipelines.tracking import RunLogger, client, metric_history
from tune.cells import fmt
from tune.erank import erank_figure, erank_histories, erank_lines, erank_table
from tune.plots import arm_curves_figure
from tune.ranking import attach_heldout, delta_columns, heldout_columns, noise_note, rank
from tune.spec import SweepError
from tune.svae_table import svae_figure, svae_lines, svae_table, svae_verdicts
from tune.swap_table import swap_lines, swap_table

METRIC = "val_bpb"
OPEN_NOISE = 1e-6
GAUGE_KEYS = ("gauge/dev", "gauge/erank", "gauge/theta_min_deg", "gauge/concentration")


def child_runs(uri: str, parent_run_id: str) -> list:
    """Every MLflow run whose parent is the sweep's run (any status)."""
    runs = client(uri)
    parent = runs.get_run(parent_run_id)
    query = f"tags.mlflow.parentRunId = '{parent_run_id}'"
    return runs.search_runs([parent.info.experiment_id], query, max_results=5000)


def close_open_children(
    uri: str, parent_run_id: str, phase: str, errored: dict | None = None
) -> None:
    """Mark the phase's child runs still RUNNING as ended: FAILED, with Tune's error, where
    their trial errored (``errored``: ``(trial key, sample JSON or "")`` -> error line; a trial
    whose process died with its training), else KILLED (pruned by ASHA, or stopped)."""
    runs = client(uri)
    errored = errored or {}
    for run in child_runs(uri, parent_run_id):
        tags = run.data.tags
        if run.info.status != "RUNNING" or tags.get("phase") != phase:
            continue
        error = errored.get((tags.get("trial", ""), tags.get("sample", "")))
        if error is not None:
            runs.set_tag(run.info.run_id, "error", error)
            runs.set_terminated(run.info.run_id, "FAILED")
            continue
        runs.set_tag(run.info.run_id, "pruned_or_stopped", "true")
        runs.set_terminated(run.info.run_id, "KILLED")


def _reference(program: str, arm: str) -> str | None:
    """The arm ``arm`` is compared with, per program (None: it is a reference itself)."""
    if program == "seed-battery":
        if arm.startswith("softmax/"):  # a twin against the aleph model it twins
            return arm.removeprefix("softmax/")
        return None if arm == "byte" else "byte"
    if program == "preservation":
        head, _, name = arm.partition("/")
        return None if name == "free" else f"{head}/free"
    if program == "survey":
        return None if arm == "kaux/0" else "kaux/0"
    if program == "graft":
        kind, _, variant = arm.partition("/")
        return f"{kind}/cold" if variant == "graft" else None
    if program == "ladder":
        return None if arm == "d4" else "d4"
    return None


def _rows(runs: list) -> list[dict]:
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        rows.append(
            {
                "arm": tags.get("arm", "?"),
                "kind": tags.get("kind", "train"),
                "head": tags.get("head", ""),
                "seed": tags.get("seed", ""),
                "status": run.info.status,
                "run_id": run.info.run_id,
                "metrics": dict(metrics),
                "sample": tags.get("sample", ""),
                "employment": tags.get("aleph_employment", ""),
                "mechanism": tags.get("mechanism", ""),
                "control_mechanism": tags.get("control_mechanism", ""),
            }
        )
    return rows


def _stats(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def arm_table(program: str, rows: list[dict]) -> list[dict]:
    """One row per arm of the train trials, ranked on held-out bits/byte (``tune.ranking``): n,
    failed, held-out bpb ± SE, Δ ± SE against the reference with its verdict, and the training
    curve's last ``val_bpb`` (mean ± std over seeds)."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "train":
            by_arm[r["arm"]].append(r)
    table = []
    for arm, runs in by_arm.items():
        done = [
            r["metrics"][METRIC]
            for r in runs
            if r["status"] == "FINISHED" and METRIC in r["metrics"]
        ]
        mean, std = _stats(done)
        row = {
            "arm": arm,
            "n": len(done),
            "failed": sum(r["status"] == "FAILED" for r in runs),
            **heldout_columns(runs),
            "val_bpb": mean,
            "std": std,
        }
        # The codebook's final gauge (§9): what the preservation arms and doses act on.
        for key in ("gauge/dev", "gauge/erank"):
            vals = [
                r["metrics"][key] for r in runs if r["status"] == "FINISHED" and key in r["metrics"]
            ]
            row[key.split("/")[1]] = _stats(vals)[0]
        row["employment"] = employment_of(
            r["employment"] for r in runs if r["status"] == "FINISHED"
        )
        table.append(row)
    for t in table:
        ref = _reference(program, t["arm"])
        t["reference"] = ref if ref in by_arm else ""
        blank = {"delta": math.nan, "delta_se": math.nan, "delta_verdict": ""}
        t.update(delta_columns(by_arm[t["arm"]], by_arm[ref]) if ref in by_arm else blank)
        if program == "graft" and t["arm"].endswith("/graft"):
            for label, other in _graft_controls(t["arm"]):
                if other in by_arm:
                    t.update(delta_columns(by_arm[t["arm"]], by_arm[other], f"delta_vs_{label}"))
    return rank(table)


GRAFT_CONTROLS = ("cold_full", "donor", "warm_restart", "continuation")
"""What a graft is compared with besides its cold start at the same budget (``tune.programs``):
a cold start at the donor's budget, the donor, and the donor trained on for the graft's budget
as a warm restart and as a true continuation."""


def _graft_controls(arm: str) -> list[tuple[str, str]]:
    kind = arm.partition("/")[0]
    arms = (f"{kind}/cold-full", "donor", "warm-restart", "continuation")
    return list(zip(GRAFT_CONTROLS, arms))


def contrast_table(rows: list[dict]) -> tuple[list[dict], dict]:
    """Per arm: base bpb and Δbpb of each op (mean ± std over checkpoints); dependence ratios."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "contrast" and r["status"] == "FINISHED":
            by_arm[r["arm"]].append(r["metrics"])
    table = []
    for arm, ms in sorted(by_arm.items()):
        row = {
            "arm": arm,
            "n": len(ms),
            "base_bpb": _stats([m["contrast/base_bpb"] for m in ms])[0],
        }
        for op in ("permute", "randomize"):
            key = f"contrast/{op}/delta_bpb"
            row[op], row[f"{op}_std"] = _stats([m[key] for m in ms if key in m])
            if len(ms) == 1:  # one checkpoint: the spread over the ablation's own seeds
                row[f"{op}_std"] = ms[0].get(f"{key}_std", math.nan)
        table.append(row)
    ratios = {}
    closed = [t for t in table if t["arm"].startswith("kernel")]
    opened = [t for t in table if t["arm"].startswith("pmix") and not t["arm"].startswith("pmix8")]
    for op in ("permute", "randomize"):
        if closed and opened:
            c = statistics.fmean(t[op] for t in closed)
            o = statistics.fmean(t[op] for t in opened)
            # |Δ_open| at fp reorder noise (~1e-6, §10.2): the ratio is unbounded, not signed.
            ratios[op] = {
                "closed": c,
                "open": o,
                "ratio": c / o if abs(o) > OPEN_NOISE else math.inf,
            }
    return table, ratios


def search_table(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r["kind"] == "train":
            out.append(
                {
                    "sample": r["sample"],
                    "status": r["status"],
                    "val_bpb": r["metrics"].get(METRIC, math.nan),
                }
            )
    return sorted(out, key=lambda t: (math.isnan(t["val_bpb"]), t["val_bpb"]))


def summarize(uri: str, parent_run_id: str, progress=print, log: bool = True) -> dict:
    """Build, log (to the parent run) and print the summary of sweep ``parent_run_id``."""
    try:
        parent = client(uri).get_run(parent_run_id)
    except Exception as exc:
        raise SweepError(f"no MLflow run {parent_run_id} in {uri}") from exc
    program = parent.data.tags.get("program")
    if parent.data.tags.get("kind") != "sweep" or not program:
        raise SweepError(f"MLflow run {parent_run_id} is not a geolip sweep")
    rows = _rows(child_runs(uri, parent_run_id))
    attach_heldout(uri, rows)
    summary = {
        "program": program,
        "sweep": parent.data.tags.get("sweep"),
        "run_id": parent_run_id,
        "arms": arm_table(program, rows),
    }
    if program == "contrast":
        summary["contrast"], summary["dependence"] = contrast_table(rows)
    if program == "survey":
        summary["bank_swap"] = swap_table(rows)
    if program == "hemispheres":
        summary["erank_histories"] = erank_histories(uri, rows)
        summary["erank"] = erank_table(summary["erank_histories"])
    if program == "search":
        summary["search"] = search_table(rows)
    if program == "svae":
        summary["svae"] = svae_table(rows)
        summary["svae_verdicts"] = svae_verdicts(summary["svae"])
    markdown = to_markdown(summary)
    progress(markdown)
    if log:
        logger = RunLogger(uri, parent_run_id)
        logger.log_text(markdown, "summary.md")
        logger.log_text(to_csv(summary["arms"]), "summary.csv")
        logger.log_dict(_json_safe(summary), "summary.json")
        _log_plots(logger, uri, summary, rows)
        logger.flush()
    return summary


def employment_of(verdicts) -> str:
    """The runs' employment verdicts (the ``aleph_employment`` tag, geolip.aleph.experiments.
    employment), as one cell: ``closed loop``, or ``closed loop ×2, open loop ×1`` when seeds
    disagree; empty for runs from before the tag."""
    counts = Counter(v for v in verdicts if v)
    if len(counts) <= 1:
        return next(iter(counts), "")
    return ", ".join(f"{v} ×{n}" for v, n in counts.most_common())


def to_markdown(summary: dict) -> str:
    lines = [f"## {summary['sweep']} ({summary['program']})", ""]
    if summary["arms"] and not summary.get("search"):
        lines += _arm_lines(summary["arms"])
    if summary.get("contrast"):
        lines += [
            "",
            "| arm | n | base bpb | Δ permute | Δ randomize |",
            "|---|---:|---:|---:|---:|",
        ]
        for t in summary["contrast"]:
            lines.append(
                f"| {t['arm']} | {t['n']} | {fmt(t['base_bpb'])} | "
                f"{fmt(t['permute'], '+.4f')} ± {fmt(t['permute_std'])} | "
                f"{fmt(t['randomize'], '+.4f')} ± {fmt(t['randomize_std'])} |"
            )
        for op, d in summary.get("dependence", {}).items():
            ratio = "∞ (open loop at fp noise)" if math.isinf(d["ratio"]) else f"{d['ratio']:.1f}"
            lines.append(
                f"\n{op}: closed loop (kernel) {d['closed']:+.4f}, open loop (pmix) "
                f"{d['open']:+.2e}, dependence ratio {ratio}"
            )
    if summary.get("bank_swap"):
        lines += swap_lines(summary["bank_swap"])
    if summary.get("erank"):
        lines += erank_lines(summary["erank"])
    if summary.get("svae"):
        lines += svae_lines(summary["svae"], summary["svae_verdicts"])
    if summary.get("search"):
        lines += [
            "",
            "KILLED: pruned by ASHA",
            "",
            "| sample | status | val bpb |",
            "|---|---|---:|",
        ]
        lines += [
            f"| {t['sample']} | {t['status']} | {fmt(t['val_bpb'])} |" for t in summary["search"]
        ]
    return "\n".join(lines)


def _pm(mean, se, spec: str = ".4f") -> str:
    """``2.6000 ± 0.0031`` (the ± part only where there is an SE)."""
    text = fmt(mean, spec)
    return text if se is None or math.isnan(se) else f"{text} ± {fmt(se)}"


def _arm_lines(arms: list[dict]) -> list[str]:
    lines = [
        "| rank | arm | n | failed | held-out bpb ± SE | vs | Δ ± SE | | val bpb ± std | dev "
        "| erank | aleph |",
        "|---:|---|---:|---:|---|---|---|---|---|---:|---:|---|",
    ]
    for t in arms:
        delta = _pm(t["delta"], t.get("delta_se"), "+.4f")
        also = [
            f"vs {label.replace('_', '-')} "
            f"{_pm(t[f'delta_vs_{label}'], t.get(f'delta_vs_{label}_se'), '+.4f')}, "
            f"{t.get(f'delta_vs_{label}_verdict') or '—'}"
            for label in GRAFT_CONTROLS
            if f"delta_vs_{label}" in t
        ]
        if also:
            delta += " (" + "; ".join(also) + ")"
        lines.append(
            f"| {t.get('rank') or '—'} | {t['arm']} | {t['n']} | {t['failed']} | "
            f"{_pm(t.get('heldout_bpb'), t.get('heldout_se'))} | {t['reference'] or '—'} | "
            f"{delta} | {t.get('delta_verdict') or '—'} | {fmt(t['val_bpb'])} ± {fmt(t['std'])} | "
            f"{fmt(t.get('dev'), '+.4f')} | {fmt(t.get('erank'), '.2f')} | "
            f"{t.get('employment') or '—'} |"
        )
    return [*lines, "", noise_note(arms)]


def to_csv(table: list[dict]) -> str:
    out = io.StringIO()
    keys = list(dict.fromkeys(k for row in table for k in row))
    writer = csv.DictWriter(out, fieldnames=keys)
    writer.writeheader()
    writer.writerows(table)
    return out.getvalue()


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def _log_plots(logger, uri: str, summary: dict, rows: list[dict]) -> None:
    arms = [t for t in summary["arms"] if t["n"] and math.isfinite(t.get("heldout_bpb", math.nan))]
    if arms:
        title = f"{summary['program']}: held-out bits/byte (error bars: SE, windows and seeds)"
        logger.log_figure(
            bars_figure(arms, "arm", "heldout_bpb", "heldout_se", title, "bits/byte"),
            "arms_bpb.png",
        )
    deltas = [t for t in arms if math.isfinite(t.get("delta", math.nan))]
    if deltas:
        bars = [{**t, "bar": f"{t['arm']} − {t['reference']}"} for t in deltas]
        title = f"{summary['program']}: Δ against the reference (error bars: 2 SE)"
        for t in bars:
            t["two_se"] = 2 * t["delta_se"] if math.isfinite(t["delta_se"]) else math.nan
        fig = bars_figure(bars, "bar", "delta", "two_se", title, "Δ bits/byte", baseline=0.0)
        logger.log_figure(fig, "arms_delta.png")
    if summary.get("contrast"):
        bars = [
            {"bar": f"{t['arm']} {op}", "delta": t[op], "std": t[f"{op}_std"]}
            for t in summary["contrast"]
            for op in ("permute", "randomize")
        ]
        logger.log_figure(
            bars_figure(
                bars, "bar", "delta", "std", "controller contrast", "Δ bits/byte", baseline=0.0
            ),
            "contrast.png",
        )
    if summary.get("erank"):
        fig = erank_figure(summary["erank_histories"], summary["erank"])
        logger.log_figure(fig, "erank.png")
    if summary.get("svae"):
        logger.log_figure(svae_figure(summary["svae"]), "svae_alpha.png")
    histories = _gauge_histories(uri, rows)
    if histories:
        logger.log_figure(
            arm_curves_figure(histories, GAUGE_KEYS, "gauge per arm"), "gauge_arms.png"
        )


def _gauge_histories(uri: str, rows: list[dict]) -> dict[str, list[dict]]:
    """Per arm, the gauge metrics per step averaged over its finished train trials."""
    sums: dict[str, dict[int, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in rows:
        if r["kind"] != "train" or r["status"] != "FINISHED":
            continue
        for key in GAUGE_KEYS:
            for step, value in metric_history(uri, r["run_id"], key):
                sums[r["arm"]][step][key].append(value)
    return {
        arm: [
            {"step": s, **{k: statistics.fmean(v) for k, v in steps[s].items()}}
            for s in sorted(steps)
        ]
        for arm, steps in sums.items()
    }
