"""What each ``geolip sweep`` program costs at ``--scale small`` on this machine (extrapolated).

Measures the training throughput of the ``small`` preset per head and bank size in this process
(the byte head is the baseline of the ratios), then prices every trial of every program's small
plan: steps x batch x T trigrams at its head's rate (scaled by depth for the depth graft), plus
the per-trial start-up measured by ``--overhead`` (~35 s per tiny trial here), trials run one at
a time (2 cores: one trial holds both). Evaluation trials (contrast, bank swap) count as start-up.

    python benchmarks/bench_sweep.py                 # a few minutes on 2 cores
    python benchmarks/bench_sweep.py --quick         # seconds: tiny preset as a smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_aleph_heads import HEADS, random_bank, time_head  # noqa: E402

from geolip.aleph.presets import get_preset  # noqa: E402
from tune.programs import PROGRAMS, Options, plan  # noqa: E402
from tune.spec import SWEEP_SCALES  # noqa: E402


def rates(preset: str, banks: dict[str, int], batch: int, repeats: int) -> dict:
    """Training trigrams/s per (head, bank variant); byte has no bank."""
    run_cfg = get_preset(preset)
    data = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8)
    out = {}
    for variant, n in banks.items():
        bank = random_bank(n)
        for head in HEADS:
            if head == "byte" and variant != "sparse":
                continue
            key = ("byte", "none") if head == "byte" else (head, variant)
            out[key] = time_head(run_cfg, head, bank, data, batch, repeats)["train"]
            print(f"  {key[0]:>6} {key[1]:>6}: {out[key]:,.0f} trigrams/s", flush=True)
    return out


def price(program: str, scale, seeds: int, rate: dict, overhead: float) -> tuple[int, float]:
    """(trials, seconds) of ``program``'s plan at ``scale``."""
    base = get_preset(scale.preset)
    trials = [t for p in plan(program, Options(scale, seeds)) for t in p.trials]
    if program == "search":
        trials = trials * scale.search_samples  # ASHA stops some early: an upper bound
    seconds = 0.0
    for t in trials:
        seconds += overhead
        if t.kind != "train":
            continue
        steps, T, layers = t.run.train.steps, t.run.model.seq_trigrams, t.run.model.n_layers
        pointers = t.run.model.head.n_pointers
        head = "pmix8" if t.head == "pmix" and pointers == 8 else t.head
        bank = "none" if head == "byte" else ("dense" if t.bank == "dense" else "sparse")
        r = rate[(head, bank)] * base.model.n_layers / layers
        seconds += steps * base.train.batch_size * T / r
    return len(trials), seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny preset, tiny banks: a smoke run")
    p.add_argument("--batch", type=int, default=8, help="rows per timed step (rate is per trigram)")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per head")
    p.add_argument("--overhead", type=float, default=35.0, help="seconds of start-up per trial")
    args = p.parse_args(argv)
    scale = SWEEP_SCALES["tiny" if args.quick else "small"]
    print(f"== training rate, {scale.preset} preset (batch {args.batch}, {args.repeats} steps) ==")
    rate = rates(scale.preset, scale.banks, args.batch, args.repeats)
    base = rate[("byte", "none")]
    print(f"\n{'head':>6} {'bank':>6} {'trigrams/s':>11} {'vs byte':>8}")
    for (head, bank), r in rate.items():
        print(f"{head:>6} {bank:>6} {r:>11,.0f} {r / base:>7.2f}x")
    print(f"\n== cost of --scale {scale.name} (seeds {scale.seeds}, one trial at a time) ==")
    print(f"{'program':>13} {'trials':>7} {'hours':>8} {'days':>6}")
    for program in PROGRAMS:
        n, seconds = price(program, scale, scale.seeds, rate, args.overhead)
        print(f"{program:>13} {n:>7} {seconds / 3600:>8.1f} {seconds / 86400:>6.1f}")
    print("(search: every sample priced at full budget, an upper bound under ASHA; contrast:")
    print(" its own kernel/pmix battery included)")


if __name__ == "__main__":
    main()
