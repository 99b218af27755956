"""The AlephLM stages of ``geolip demo``: atlas, bank, training, evaluation, contrast, sample
(records as described in ``demo.stages``)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from atlas.bank import bank_coverage, bank_summary, build_bank, save_bank_file
from atlas.build import build_atlas
from atlas.config import AtlasConfig
from geolip.aleph.checkpoint import load_checkpoint
from geolip.aleph.generate import generate
from pipelines.aleph.driver import train_aleph
from pipelines.aleph.evaluate import contrast_checkpoint, eval_checkpoint
from pipelines.aleph.job import TrainJob
from pipelines.tracking import RunLogger

HEADS = ("kernel", "pmix")
PROMPT = b"Return the "


def stage_atlas(d) -> dict:
    """Ray Data counts the corpus into the stratified n-gram atlas (Parquet, DuckDB-queryable)."""
    result = build_atlas(
        d.corpus, d.home / "atlas", AtlasConfig(target_size=d.scale.atlas_target), progress=True
    )
    m = result.manifest
    kept = {name: s["kept"] for name, s in m["strata"].items()}
    mb = m["corpus"]["n_bytes"] / 1e6
    metrics = {f"atlas/{k}_kept": v for k, v in kept.items()}
    metrics.update({"atlas/entries": sum(kept.values()), "atlas/corpus_mb": mb})
    metrics["atlas/build_seconds"] = m.get("build_seconds") or 0.0
    run_id = d.log_run(
        "atlas", {"kind": "atlas"}, {"atlas": m["config"]}, metrics, dicts={"manifest.json": m}
    )
    summary = (
        f"atlas: {sum(kept.values()):,} n-grams ("
        + ", ".join(f"{k} {v:,}" for k, v in kept.items())
        + f") of {mb:.1f} MB in {metrics['atlas/build_seconds']:.1f} s"
    )
    return {
        "path": str(result.path),
        "kept": kept,
        "corpus_mb": mb,
        "summary": summary,
        "seconds": metrics["atlas/build_seconds"],
        "runs": [run_id],
    }


def stage_bank(d) -> dict:
    """Cut the trigram bank from the atlas (stratum quotas) and measure its held-out coverage."""
    path = d.home / "bank.safetensors"
    if not path.exists():  # the file is written whole (temporary name, then renamed)
        trigrams, prior, provenance = build_bank(d.record("atlas")["path"], d.scale.bank_size)
        save_bank_file(path, trigrams, prior, provenance)
    info = bank_summary(path, top=0)
    cov = bank_coverage(path, d.corpus, "validation")
    summary = (
        f"bank: {info['size']:,} trigrams, held-out coverage {cov['coverage']:.1%}, "
        f"prior entropy {info['prior_entropy_bits']:.2f} bits"
    )
    logger = RunLogger(d.uri, d.record("atlas")["runs"][0])
    logger.log_metrics(
        {
            "bank/size": info["size"],
            "bank/coverage": cov["coverage"],
            "bank/prior_entropy_bits": info["prior_entropy_bits"],
        },
        0,
    )
    logger.flush()
    d.console.print(summary)
    return {
        "path": str(path),
        "size": info["size"],
        "coverage": cov["coverage"],
        "summary": summary,
        "paths": [str(path)],
    }


def stage_train(d, head: str) -> dict:
    """Ray Train (``--workers`` data-parallel workers) on the byte shards, with the atlas's bank."""
    train = d.scale.train
    job = TrainJob(
        run=train.run_config(head),
        corpus=d.corpus,
        ctx=d.ctx,
        bank=d.record("bank")["path"],
        eval_bytes=train.eval_bytes,
    )
    out = train_aleph(job, progress=d.console.print)
    final = out.verdict["final"]
    summary = (
        f"{head}: held-out {final.get('val_bpb', float('nan')):.3f} bpb after "
        f"{out.verdict['steps']} steps on {d.ctx.workers} workers "
        f"({final.get('tokens_per_s', 0):,.0f} tok/s, {out.seconds:.0f} s); "
        f"aleph {out.verdict.get('employment') or 'not measured'}"
    )
    d.console.print(summary)
    run_dir = out.checkpoint.parent
    return {
        "name": out.name,
        "checkpoint": str(out.checkpoint),
        "final": final,
        "seconds": out.seconds,
        "summary": summary,
        "runs": [out.run_id],
        "paths": [str(run_dir), str(d.data / "ray_results" / out.name)],
    }


def stage_eval(d) -> dict:
    """Held-out bits/byte of both heads next to the compressors, and the controller contrast."""
    rows, contrast = {}, {}
    for head in HEADS:
        ck = d.record(f"train-{head}")["checkpoint"]
        # tracking_uri=None: the figures go into the checkpoint's own training run.
        res = eval_checkpoint(
            ck,
            d.corpus,
            d.data,
            eval_bytes=d.scale.train.eval_bytes,
            prime_bytes=d.scale.prime_bytes,
        )
        rows[head] = res
        _, report = contrast_checkpoint(
            ck,
            d.corpus,
            d.data,
            eval_bytes=d.scale.train.eval_bytes,
            ops=("permute", "randomize"),
            seeds=d.scale.contrast_seeds,
            windows=d.scale.contrast_windows,
        )
        contrast[head] = {
            "base": report.base_bpb,
            **{r["op"]: r["delta_bpb_mean"] for r in report.rows()},
        }
    compressors = {c["name"]: c["bpb"] for c in rows[HEADS[0]].get("compressors", [])}
    kn = {k["name"]: k["bpb"] for k in rows[HEADS[0]].get("kneser_ney", [])}
    bpb = {h: rows[h]["windowed"]["bpb"] for h in HEADS}
    _print_eval(
        d.console,
        bpb,
        {h: rows[h]["streamed"]["bpb"] for h in HEADS},
        compressors,
        kn,
        contrast,
        rows[HEADS[0]]["bytes"],
    )
    best = min(compressors.items(), key=lambda kv: kv[1]) if compressors else ("-", float("nan"))
    k, p = contrast["kernel"], contrast["pmix"]
    summary = (
        f"eval: kernel {bpb['kernel']:.3f}, pmix {bpb['pmix']:.3f} bpb (best compressor "
        f"{best[0]} {best[1]:.3f}{_kn_note(kn)}); contrast Δpermute kernel {k['permute']:+.4f}, "
        f"pmix {p['permute']:+.2e}"
    )
    return {
        "bpb": bpb,
        "compressors": compressors,
        "kneser_ney": kn,
        "contrast": contrast,
        "summary": summary,
        "bytes": rows[HEADS[0]]["bytes"],
    }


def _kn_note(kn: dict) -> str:
    """``", KN-5 2.345"``: the highest Kneser-Ney order's figure, for the summary line."""
    if not kn:
        return ""
    name = max(kn, key=lambda k: int(k.split("-")[1]))
    return f", {name} {kn[name]:.3f}"


def _print_eval(console, windowed, streamed, compressors, kn, contrast, n_bytes) -> None:
    table = Table(title=f"held-out bits/byte ({n_bytes:,} bytes)")
    for col in ("model", "windowed", "streamed"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for head in HEADS:
        table.add_row(f"AlephLM {head}", f"{windowed[head]:.4f}", f"{streamed[head]:.4f}")
    for name, bpb in compressors.items():
        table.add_row(name, f"{bpb:.4f}", "")
    for name, bpb in kn.items():  # counted from the training split, as the models were
        table.add_row(f"{name} (Kneser-Ney)", f"{bpb:.4f}", "")
    console.print(table)
    table = Table(title="controller contrast: Δ bits/byte when the codebook is ablated")
    for col in ("head", "base", "permute", "randomize"):
        table.add_column(col, justify="left" if col == "head" else "right")
    for head, c in contrast.items():
        table.add_row(head, f"{c['base']:.4f}", f"{c['permute']:+.2e}", f"{c['randomize']:+.2e}")
    table.caption = "the kernel head reads the codebook (closed loop); pmix does not (§10)"
    console.print(table)


def stage_sample(d) -> dict:
    """Text from the head with the lower held-out bits/byte (logged to its run)."""
    bpb = d.record("eval")["bpb"]
    head = min(bpb, key=bpb.get)
    rec = d.record(f"train-{head}")
    model, _, _ = load_checkpoint(Path(rec["checkpoint"]))
    text = PROMPT + generate(model, PROMPT, d.scale.sample_bytes, temperature=0.7, seed=0)
    text = text.decode("utf-8", errors="replace")
    RunLogger(d.uri, rec["runs"][0]).log_text(text, "sample.txt")
    d.console.rule(f"sample from {head} (temperature 0.7)")
    d.console.print(text, markup=False, highlight=False)
    d.console.rule()
    return {"head": head, "text": text, "summary": f"sample from {head}: {text[:60]!r}..."}
