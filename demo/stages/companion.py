"""The later stages of ``geolip demo``: MiniLM features, the SVAE companion, one sweep, and the
closing summary run (records as in ``demo.stages.aleph``)."""

from __future__ import annotations

import dataclasses
import math

from geolip.config import apply_changes
from pipelines.features.extract import FeatureRequest, extract_features
from pipelines.plots import bars_figure
from pipelines.svae.data import run_config
from pipelines.svae.driver import SVAEJob, train_svae_job
from tune.sweep import SweepJob, run_sweep, sweep_name

SVAE_DATA = {"svae-features": "features", "svae-images": "images:structured"}
SWEEP_PROGRAM = "preservation"


def stage_features(d) -> dict:
    """Ray Data runs the host encoder (an actor pool) over the corpus's sentences into Parquet."""
    out = d.home / "features"
    req = FeatureRequest(corpus=d.corpus, max_sentences=d.scale.feature_sentences, max_length=64)
    manifest = extract_features(req, out, progress=d.console.print)
    host, splits = manifest["host"], manifest["splits"]
    summary = (
        f"features: {host['name']} (d={host['hidden_size']}) -> "
        f"{splits['train']['tokens']:,} train, {splits['validation']['tokens']:,} "
        f"validation token vectors"
    )
    d.console.print(summary)
    return {
        "path": str(out),
        "host": host["name"],
        "splits": splits,
        "summary": summary,
        "paths": [str(out)],
    }


def stage_svae(d, stage: str) -> dict:
    """The companion on Ray Train with its patch-shuffled control; prints the §16 verdict."""
    data = SVAE_DATA[stage]
    if data == "features":
        data = f"features:{d.record('features')['path']}"
    changes = {f"train.{key}": value for key, value in d.scale.svae_train.items()}
    run = apply_changes(run_config(data), changes)
    job = SVAEJob(data, run, d.ctx, control=d.scale.svae_control)
    out = train_svae_job(job, progress=d.console.print)
    v = out["verdict"]
    control = v.get("control") or {}
    summary = (
        f"SVAE on {SVAE_DATA[stage]}: recon cos {v['recon_cos_external']:.3f} "
        f"(baseline {v['baseline_cos']:.3f}), frame dev {v['frame_deviation']:+.4f}, "
        f"{v['frac_in_envelope']:.0%} in envelope, alpha {v['alpha_init']:.3f}->"
        f"{v['alpha_final']:.3f}, mechanism {v['mechanism']}"
        + (f" (shuffled control: {control['mechanism']})" if control else "")
    )
    d.console.print(summary)
    run_dir = d.data / "runs" / "svae" / out["name"]
    ray_dirs = [d.data / "ray_results" / (out["name"] + s) for s in ("", "-control")]
    keys = (
        "recon_cos_external",
        "baseline_cos",
        "frame_deviation",
        "frac_in_envelope",
        "alpha_final",
        "mechanism",
    )
    return {
        "name": out["name"],
        "verdict": {k: v[k] for k in keys},
        "control_mechanism": control.get("mechanism"),
        "summary": summary,
        "runs": [out["run_id"]],
        "paths": [str(run_dir), *map(str, ray_dirs)],
    }


def stage_sweep(d) -> dict:
    """One experiment program on Ray Tune: a preservation battery over seeds."""
    s, seeds = d.scale, d.scale.sweep.seeds
    # One worker per trial, trained in its Tune trial's process (the trials run side by side);
    # a failed trial is recorded.
    ctx = d.ctx.replace(workers=1, max_failures=0, auto_resume=False)
    job = SweepJob(program=SWEEP_PROGRAM, ctx=ctx, scale=s.name, arms=s.sweep_arms, corpus=d.corpus)
    state = ctx.data_dir / "sweeps" / sweep_name(job, seeds)
    if (state / "sweep.json").exists():  # an interrupted demo's sweep: continue it
        job = dataclasses.replace(job, ctx=ctx.replace(resume=True))
    # soft_wrap: the summary is a Markdown table, which wrapping would break
    out = run_sweep(job, progress=lambda s: d.console.print(s, soft_wrap=True, markup=False))
    keys = ("arm", "n", "failed", "heldout_bpb", "heldout_se", "val_bpb", "std", "reference")
    keys += ("delta", "delta_se", "delta_verdict")
    arms = [{k: r.get(k) for k in keys} for r in out.summary["arms"]]
    parts = [
        f"{a['arm']} {a['heldout_bpb']:.3f} ± {a['heldout_se']:.3f}"
        for a in arms
        if _finite(a["heldout_bpb"]) and _finite(a["heldout_se"])
    ]
    summary = f"sweep {SWEEP_PROGRAM} ({seeds} seed(s) per arm): " + ", ".join(parts)
    return {
        "name": out.name,
        "arms": arms,
        "summary": summary,
        "runs": [out.run_id],
        "paths": [str(state)],
    }


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def stage_summary(d) -> dict:
    """A ``demo-summary`` run: the key figures as metrics, the summary as Markdown, one plot."""
    ev = d.record("eval")
    rows = [{"name": f"AlephLM {h}", "bpb": b} for h, b in ev["bpb"].items()]
    rows += [{"name": n, "bpb": b} for n, b in ev["compressors"].items()]
    rows += [{"name": n, "bpb": b} for n, b in ev.get("kneser_ney", {}).items()]
    rows += [
        {"name": f"sweep {a['arm']}", "bpb": a.get("heldout_bpb")}
        for a in d.record("sweep")["arms"]
        if _finite(a.get("heldout_bpb"))
    ]
    fig = bars_figure(
        rows,
        "name",
        "bpb",
        title=f"geolip demo ({d.scale.name}): held-out bits/byte",
        ylabel="bits/byte",
    )
    metrics = {f"eval/{h}_bpb": b for h, b in ev["bpb"].items()}
    metrics.update({f"contrast/{h}_permute": c["permute"] for h, c in ev["contrast"].items()})
    for stage in ("svae-features", "svae-images"):
        metrics[f"{stage}/recon_cos"] = d.record(stage)["verdict"]["recon_cos_external"]
    markdown = summary_markdown(d)
    run_id = d.log_run(
        "demo-summary",
        {"kind": "demo-summary"},
        {"scale": d.scale.name, "corpus": d.corpus},
        metrics,
        texts={"summary.md": markdown},
        figures={"demo_bpb.png": fig},
    )
    return {"summary": "summary run logged", "runs": [run_id], "markdown": markdown}


def summary_markdown(d) -> str:
    """Every stage's one-line summary, in order, as a Markdown list."""
    lines = [f"# geolip demo ({d.scale.name}) on {d.corpus}", ""]
    for stage in d.stage_names():
        rec = d.record(stage, required=False)
        if rec and stage != "summary":
            lines.append(f"- **{stage}**: {rec['summary']}")
    return "\n".join(lines) + "\n"
