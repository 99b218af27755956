"""Tokens/s of the ``small`` AlephLM (d=384, L=4, H=6, T=256) per head at bank sizes 8,192 and
65,536: one training step (forward + backward + Adam) and a no-grad forward, against the byte head
measured in the same process (the baseline: no bank at all).

    python benchmarks/bench_aleph_heads.py            # full table (a few minutes on 2 cores)
    python benchmarks/bench_aleph_heads.py --quick    # seconds: tiny preset, small banks
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from geolip.aleph.bank import TrigramBank
from geolip.aleph.data import sample_windows
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import small, tiny
from geolip.aleph.train import build_optimizer, build_scheduler, train_step
from geolip.config import apply_changes

# The seed battery's head variants (``tune.programs.BATTERY_HEADS``) as config changes.
HEADS = {
    "byte": {"model.head.kind": "byte"},
    "kernel": {"model.head.kind": "kernel"},
    "pmix": {"model.head.kind": "pmix", "model.head.n_pointers": 4},
    "pmix8": {"model.head.kind": "pmix", "model.head.n_pointers": 8},
    "apmix": {"model.head.kind": "apmix"},
}


def random_bank(n: int, seed: int = 0) -> TrigramBank:
    """n distinct trigrams with a Zipf-like prior (content does not change the cost)."""
    g = np.random.default_rng(seed)
    codes = g.choice(256**3, size=n, replace=False)
    rows = np.stack([codes // 65536, (codes // 256) % 256, codes % 256], 1)
    prior = -np.log(np.arange(1, n + 1, dtype=np.float64))
    prior -= np.log(np.exp(prior).sum())
    return TrigramBank(torch.from_numpy(rows), torch.from_numpy(prior).float(), {"bench": True})


def time_head(run_cfg, head: str, bank, data: np.ndarray, batch: int, repeats: int) -> dict:
    cfg = apply_changes(run_cfg, HEADS[head])
    train_cfg = dataclasses.replace(cfg.train, batch_size=batch, steps=repeats + 1)
    torch.manual_seed(0)
    model = AlephLM(cfg.model, bank if cfg.model.uses_bank else None)
    opt = build_optimizer(model, train_cfg)
    sched = build_scheduler(opt, train_cfg)
    gen = torch.Generator().manual_seed(0)
    T = cfg.model.seq_trigrams
    windows = [sample_windows(data, batch, T, gen) for _ in range(repeats + 1)]
    train_step(model, opt, sched, [windows[0]], train_cfg)  # warm-up: allocator, thread pools
    t0 = time.perf_counter()
    for w in windows[1:]:
        train_step(model, opt, sched, [w], train_cfg)
    train_s = (time.perf_counter() - t0) / repeats
    model.eval()
    with torch.no_grad():
        model(windows[0][:, :-1], windows[0][:, 1:])
        t0 = time.perf_counter()
        for w in windows[1:]:
            model(w[:, :-1], w[:, 1:])
    eval_s = (time.perf_counter() - t0) / repeats
    params = sum(p.numel() for p in model.parameters())
    return {"train": batch * T / train_s, "eval": batch * T / eval_s, "params": params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--banks", default="8192,65536")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--quick", action="store_true", help="tiny preset, banks 512/2048")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run_cfg, banks = small(), [int(b) for b in args.banks.split(",")]
    if args.quick:
        run_cfg, banks = tiny(), [512, 2048]
    data = np.random.default_rng(0).integers(0, 256, 2_000_000, dtype=np.uint8)
    m = run_cfg.model
    print(
        f"preset {run_cfg.preset}: d={m.d_model} L={m.n_layers} H={m.n_heads} T={m.seq_trigrams}"
        f"  batch {args.batch}  threads {args.threads}  torch {torch.__version__}"
    )
    header = f"{'head':<8}{'bank N':>8}{'params':>11}{'train tok/s':>13}{'eval tok/s':>12}"
    print(header + f"{'train vs byte':>15}{'eval vs byte':>14}")
    print("-" * (len(header) + 29))
    base = time_head(run_cfg, "byte", None, data, args.batch, args.repeats)
    row = f"{'byte':<8}{'-':>8}{base['params']:>11,}{base['train']:>13.0f}{base['eval']:>12.0f}"
    print(row + f"{1.0:>14.2f}x{1.0:>13.2f}x")
    for n in banks:
        bank = random_bank(n)
        for head in list(HEADS)[1:]:
            r = time_head(run_cfg, head, bank, data, args.batch, args.repeats)
            print(
                f"{head:<8}{n:>8}{r['params']:>11,}{r['train']:>13.0f}{r['eval']:>12.0f}"
                f"{r['train'] / base['train']:>14.2f}x{r['eval'] / base['eval']:>13.2f}x"
            )


if __name__ == "__main__":
    main()
