"""Does AlephLM earn its place? Equal wall-clock training on the same bytes, held-out bits/byte
(± SE) next to Kneser-Ney and the compressors, plain and primed, with a bpb-vs-time plot.

Every arm trains in this process with ``geolip.aleph.train.train`` for ``--seconds`` of training
time (each held-out probe on the curve is left out of it) on the train side of the corpus'
byte shards (the split every geolip command uses), then is scored on the first ``--eval-bytes``
of the validation side with the windowed regime (every target once, T/2 context). Arms: the
AlephLM heads (byte, kernel, pmix, apmix) and the softmax twin (``model.attn=softmax``, same
size, pmix head), each over ``--seeds`` seeds. The bank of the bank heads is the train side's
plain top-N trigrams (``bank_from_bytes``; the demo cuts it from the atlas, which needs Ray).

Baselines on the same held-out bytes: interpolated modified Kneser-Ney byte n-grams (``atlas.kn``)
counted on the same train bytes, and gzip -9 / bzip2 -9 / xz -9e / zstd -19, plain and primed
with the train bytes. The ratio column is each row's bpb over bzip2 -9's, run in this process.

SE: per arm, the standard error of the mean over held-out windows of T trigrams, combined over
seeds as sqrt(mean(SE_w²)/S + var_seeds/S) (S seeds; the between-seed term needs S ≥ 2); KN's
is over the same windows. Compressor figures are exact (one number each).

    python benchmarks/bench_lm.py                                   # 240 s per arm (~21 min)
    python benchmarks/bench_lm.py --seconds 60 --arms byte,pmix     # a quicker look
    python benchmarks/bench_lm.py --quick                           # smoke run (~1 min)
    python benchmarks/bench_lm.py --set model.d_model=96 --set train.lr=3e-3   # tuning
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from atlas.kn import KneserNey
from geolip.aleph.bank import bank_from_bytes
from geolip.aleph.bpb import target_nll_windowed
from geolip.aleph.model import AlephLM
from geolip.aleph.train import train
from pipelines.byte_shards import build_byte_shards, read_side
from pipelines.compress import compressor_baselines
from pipelines.scales import get_scale

LN2 = math.log(2)
ARMS = ("byte", "kernel", "pmix", "apmix", "softmax")
PROBE_BYTES = 12_000  # the curve's held-out probe: a prefix of the scored bytes


def arm_config(arm: str, scale: str, sets: list[str], steps: int):
    """The run config of one arm: the scale's run with the arm's head, ``--set`` on top."""
    head = "pmix" if arm == "softmax" else arm
    extra = ["model.attn=softmax"] if arm == "softmax" else []
    run = get_scale(scale).run_config(head, [*extra, *sets])
    return run.model, dataclasses.replace(run.train, steps=steps)


def window_means(bits: np.ndarray, width: int) -> np.ndarray:
    """Mean bits/byte of consecutive blocks of ``width`` bytes (the last partial one dropped)."""
    n = len(bits) // width
    return bits[: n * width].reshape(n, width).mean(1)


def mean_se(per_seed: list[np.ndarray]) -> tuple[float, float]:
    """(mean, SE) over seeds of per-window means (see the module doc)."""
    means = np.array([w.mean() for w in per_seed])
    within = np.mean([w.var(ddof=1) / len(w) for w in per_seed])
    between = means.var(ddof=1) if len(means) > 1 else 0.0
    return float(means.mean()), float(math.sqrt(within / len(means) + between / len(means)))


def model_bits(model, heldout: np.ndarray) -> np.ndarray:
    """Bits per byte of every scored held-out byte (each target trigram's NLL spread over 3)."""
    nll, _ = target_nll_windowed(model, heldout)
    return np.repeat(nll.numpy() / (3 * LN2), 3)


def run_arm(arm, args, train_bytes, heldout, probe, bank) -> dict:
    cfg, tcfg = arm_config(arm, args.scale, args.set, steps=10**9)
    # The cosine schedule should end with the budget: size the run from a few timed steps
    # (the clock still stops it at --seconds).
    probe_run = train(
        AlephLM(cfg, bank if cfg.uses_bank else None),
        train_bytes,
        dataclasses.replace(tcfg, steps=6, log_every=6),
    )
    tcfg = dataclasses.replace(tcfg, steps=max(10, int(args.seconds * 6 / probe_run.seconds)))
    per_seed, curves, rates, params = [], [], [], 0
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = AlephLM(cfg, bank if cfg.uses_bank else None)
        params = sum(p.numel() for p in model.parameters())
        curve = []

        def probe_point(m, model=model, curve=curve):
            bpb = float(model_bits(model, probe).mean())
            curve.append((m["seconds"], bpb))
            model.train()

        t = dataclasses.replace(tcfg, seed=seed, log_every=args.log_every)
        result = train(model, train_bytes, t, on_log=probe_point, max_seconds=args.seconds)
        n_tri = cfg.seq_trigrams * cfg.n_segments
        rates.append(3 * result.steps * t.batch_size * t.accum * n_tri / result.seconds)
        bits = model_bits(model, heldout)
        per_seed.append(window_means(bits, 3 * cfg.seq_trigrams))
        curves.append(curve)
        print(
            f"  {arm:<8} seed {seed}: {result.steps} steps in {result.seconds:.0f}s, "
            f"{rates[-1]:,.0f} bytes/s, held-out {bits.mean():.4f} bpb",
            flush=True,
        )
    bpb, se = mean_se(per_seed)
    return {
        "name": arm,
        "params": params,
        "bytes_per_s": float(np.mean(rates)),
        "bpb": bpb,
        "se": se,
        "curves": curves,
        "window": 3 * cfg.seq_trigrams,
    }


def kn_rows(train_bytes: np.ndarray, heldout: np.ndarray, orders, window: int) -> list[dict]:
    """Kneser-Ney of each order, counted on the train bytes, scored on the held-out bytes."""
    top = max(orders)
    grams = {n: _counts(train_bytes, n) for n in range(1, top + 1)}
    rows = []
    for n in orders:
        t0 = time.perf_counter()
        bits = KneserNey.from_counts(grams, n).bits(heldout)
        bpb, se = mean_se([window_means(bits, window)])
        rows.append({"name": f"kn-{n}", "bpb": bpb, "se": se, "seconds": time.perf_counter() - t0})
    return rows


def _counts(data: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every n-gram of ``data`` as a big-endian uint64 code (atlas.kn's keys) and its count."""
    code = np.zeros(len(data) - n + 1, np.uint64)
    for i in range(n):
        code = (code << np.uint64(8)) | data[i : len(data) - n + 1 + i].astype(np.uint64)
    return np.unique(code, return_counts=True)


def print_table(arms, kn, comp, base: float) -> None:
    head = f"{'model':<16}{'params':>9}{'bytes/s':>10}{'held-out bpb':>20}{'vs bzip2 -9':>13}"
    print("\n" + head)
    print("-" * len(head))
    for r in arms:
        cell = f"{r['bpb']:.4f} ± {r['se']:.4f}"
        print(
            f"{'aleph ' + r['name'] if r['name'] != 'softmax' else 'softmax twin':<16}"
            f"{r['params']:>9,}{r['bytes_per_s']:>10,.0f}{cell:>20}{r['bpb'] / base:>12.2f}x"
        )
    for r in kn:
        cell = f"{r['bpb']:.4f} ± {r['se']:.4f}"
        print(
            f"{'Kneser-Ney ' + r['name'][3:]:<16}{'':>9}{'':>10}{cell:>20}{r['bpb'] / base:>12.2f}x"
        )
    for r in comp:
        for label, value in ((r.name, r.bpb), (f"{r.name} primed", r.primed_bpb)):
            print(f"{label:<16}{'':>9}{'':>10}{value:>20.4f}{value / base:>12.2f}x")


def plot(arms, kn, comp, path: Path, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in arms:
        for i, curve in enumerate(r["curves"]):
            if curve:
                t, b = zip(*curve)
                ax.plot(
                    t, b, ".-", label=r["name"] if i == 0 else None, alpha=0.9 if i == 0 else 0.4
                )
    lines = [(c.name, c.bpb) for c in comp if c.name in ("bzip2 -9",)]
    lines += [(f"{c.name} primed", c.primed_bpb) for c in comp if c.name == "xz -9e"]
    lines += [(f"Kneser-Ney {r['name'][3:]}", r["bpb"]) for r in kn[-1:]]
    for (label, value), style in zip(lines, ("--", ":", "-.")):
        ax.axhline(value, color="grey", linestyle=style, label=f"{label} {value:.2f}")
    ax.set(xlabel="training seconds", ylabel=f"held-out bits/byte (first {PROBE_BYTES:,} bytes)")
    ax.set_xlim(0, seconds * 1.02)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="builtin:python-docs", help="the demo's by default")
    ap.add_argument("--scale", default="tiny", help="the run scale whose config every arm uses")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument(
        "--seconds", type=float, default=240.0, help="training seconds per arm and seed"
    )
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="config override k=v (repeatable)")
    ap.add_argument("--eval-bytes", type=int, default=100_000)
    ap.add_argument("--bank-size", type=int, default=1024, help="the demo's tiny bank")
    ap.add_argument("--kn-orders", default="3,4,5")
    ap.add_argument("--log-every", type=int, default=100, help="steps between curve probes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench_lm_out"), help="JSON + PNG here")
    ap.add_argument("--quick", action="store_true", help="smoke run: 10 s per arm, 20 KB scored")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.eval_bytes, args.log_every = 10.0, 20_000, 20
    unknown = sorted(set(args.arms.split(",")) - set(ARMS))
    if unknown:
        ap.error(f"--arms: unknown {unknown}; known: {', '.join(ARMS)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-lm-") as tmp:
        shards = build_byte_shards(args.corpus, Path(tmp), progress=lambda line: None)
        train_bytes = read_side(shards, "train")
        heldout = read_side(shards, "validation", args.eval_bytes)
    heldout = heldout[: len(heldout) - len(heldout) % 3]
    probe = heldout[:PROBE_BYTES]
    print(
        f"corpus {args.corpus}: train {len(train_bytes):,} bytes, held-out {len(heldout):,} "
        f"scored; {args.seconds:.0f} s per arm x {args.seeds} seed(s); torch "
        f"{torch.__version__}, {args.threads} threads, load {os.getloadavg()[0]:.2f}"
    )
    t0 = time.perf_counter()
    comp = compressor_baselines(heldout.tobytes(), train_bytes.tobytes())
    base = next(c.bpb for c in comp if c.name == "bzip2 -9")
    bank = bank_from_bytes(train_bytes, args.bank_size)
    arms = [run_arm(a, args, train_bytes, heldout, probe, bank) for a in args.arms.split(",")]
    window = arms[0]["window"] if arms else 96
    orders = [int(o) for o in args.kn_orders.split(",") if o]
    kn = kn_rows(train_bytes, heldout, orders, window)
    print_table(arms, kn, comp, base)
    print(
        f"SE over {len(heldout) // window} held-out windows of {window} bytes (and seeds); "
        f"vs = bpb / bzip2 -9's {base:.4f}; total {time.perf_counter() - t0:.0f}s, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    best = min(arms, key=lambda r: r["bpb"]) if arms else None
    if best is not None:
        gap = best["bpb"] - base
        verdict = "beats" if best["bpb"] + 2 * best["se"] < base else "does not beat"
        print(
            f"best AlephLM arm {best['name']}: {best['bpb']:.4f} ± {best['se']:.4f}, {verdict} "
            f"bzip2 -9 ({gap:+.4f} bpb)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(arms, kn, comp, args.out / "bench_lm.png", args.seconds)
    raw = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "arms": arms,
        "kn": kn,
        "compressors": [dataclasses.asdict(c) for c in comp],
    }
    (args.out / "bench_lm.json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"plot and JSON in {args.out}/")


if __name__ == "__main__":
    main()
