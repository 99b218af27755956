"""What each ``geolip sweep`` program costs at ``--scale small`` on this machine (extrapolated).

Measures the training throughput of the ``small`` preset per head and bank size in this process
(the byte head is the baseline of the ratios), then prices every trial of every program's small
plan: steps x batch x T trigrams at its head's rate (scaled by depth for the depth graft), plus
the per-trial start-up, trials run one at a time (2 cores: one trial holds both). Evaluation
trials (contrast, bank swap) count as start-up.

The start-up is measured (``--measure-overhead``) by two real smoke seed batteries (byte arm,
``--seeds`` trials each, one local Ray per sweep) that differ only in ``train.steps``: each
trial's MLflow run lasts ``overhead + steps x per-step``, so the two durations give the fixed
cost per trial (MLflow run, held-out evaluation, checkpoint and logged model, and on Ray Train
the Train controller, worker group and Ray Data split) with training itself cancelled out. It
is measured for both ``--trial-engine`` values, Ray Train first (the baseline), then in process
(what a one-worker sweep uses, and the figure the costs are priced with). Otherwise
``--overhead`` is the figure used.

    python benchmarks/bench_sweep.py --measure-overhead   # ~5 min more on 2 cores
    python benchmarks/bench_sweep.py                      # a few minutes on 2 cores
    python benchmarks/bench_sweep.py --quick              # seconds: tiny preset as a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_aleph_heads import HEADS, random_bank, time_head  # noqa: E402

from geolip.aleph.presets import get_preset  # noqa: E402
from tune.programs import PROGRAMS, Options, plan  # noqa: E402
from tune.spec import SWEEP_SCALES  # noqa: E402

ENGINES = ("ray-train", "in-process")
"""``--trial-engine`` values measured; the first is the baseline of the ratios."""


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


def trial_seconds(steps: int, seeds: int, engine: str) -> tuple[list[float], float]:
    """(MLflow run durations of the trials, the whole sweep command's wall seconds) of one
    smoke seed battery (byte arm) at ``steps`` with ``--trial-engine engine``."""
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import default_tracking_uri

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        cmd = [sys.executable, "-m", "pipelines", "sweep", "seed-battery", "--scale", "smoke"]
        cmd += ["--arms", "byte", "--seeds", str(seeds), "--data-dir", tmp]
        cmd += ["--set", f"train.steps={steps}", "--trial-engine", engine]
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode:
            raise SystemExit(f"the smoke sweep failed:\n{done.stderr[-3000:]}")
        client = MlflowClient(default_tracking_uri(Path(tmp)))
        experiment = client.get_experiment_by_name("geolip-sweeps").experiment_id
        runs = client.search_runs([experiment])
        runs = [r for r in runs if "-byte-s" in (r.info.run_name or "")]
        if len(runs) != seeds:
            raise SystemExit(f"expected {seeds} trial runs, found {len(runs)}")
        return [(r.info.end_time - r.info.start_time) / 1000 for r in runs], wall


def measure_overhead(seeds: int, steps: tuple[int, int] = (6, 60)) -> float:
    """Seconds per trial outside training, per trial engine (Ray Train, the baseline, then in
    process): two smoke batteries each, differing only in steps. Returns the default engine's
    (in process: the one a one-worker sweep uses)."""
    print(
        f"== per-trial start-up: smoke seed battery, byte arm, {seeds} trials at each of "
        f"{steps[0]} and {steps[1]} steps, per --trial-engine =="
    )
    rows = {}
    for engine in ENGINES:
        runs = {s: trial_seconds(s, seeds, engine) for s in steps}
        for s, (d, wall) in runs.items():
            print(f"  {engine:>10} {s:>4} steps: trial runs {', '.join(f'{x:.1f}' for x in d)} s; "
                  f"sweep {wall:.1f} s")  # fmt: skip
        a, b = (statistics.median(runs[s][0]) for s in steps)
        per_step = (b - a) / (steps[1] - steps[0])
        rows[engine] = (a - steps[0] * per_step, per_step, runs[steps[0]][1] / seeds)
    base = rows[ENGINES[0]]
    print(
        f"\n{'engine':>10} {'fixed/trial s':>13} {'ms/step':>8} {'sweep s/trial':>13} {'vs ray-train':>12}"
    )
    for engine, (fixed, per_step, wall) in rows.items():
        print(f"{engine:>10} {fixed:>13.1f} {per_step * 1e3:>8.0f} {wall:>13.1f} "
              f"{base[0] / max(fixed, 1e-9):>11.2f}x")  # fmt: skip
    fixed = rows["in-process"][0]
    verdict = "PASS" if fixed <= 10 else "FAIL"
    print(f"target: fixed per trial <= 10 s (in process): {verdict} ({fixed:.1f} s)")
    print("(fixed/trial: from the trials' MLflow runs, median; sweep s/trial: the whole "
          f"{steps[0]}-step sweep command, Ray start-up and the atlas included, over its trials)")  # fmt: skip
    return fixed


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny preset, tiny banks: a smoke run")
    p.add_argument("--batch", type=int, default=8, help="rows per timed step (rate is per trigram)")
    p.add_argument("--repeats", type=int, default=2, help="timed steps per head")
    p.add_argument(
        "--overhead",
        type=float,
        default=5.0,  # in process: 2.1 s measured in its MLflow run, plus Tune's scheduling
        help="seconds of start-up per trial",
    )
    p.add_argument(
        "--measure-overhead", action="store_true", help="measure it with two smoke sweeps"
    )
    p.add_argument("--seeds", type=int, default=3, help="trials per measuring sweep")
    args = p.parse_args(argv)
    if args.measure_overhead:
        args.overhead = measure_overhead(args.seeds)
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
