"""Tokens/s of the Ray Train loop of ``geolip train aleph`` (1 and 2 workers) against the plain
single-process loop (``geolip.aleph.train.train``), same model, same global batch, same train bytes (the
WikiText-2 sample's train split), in one process. Target: Ray Train at 1 worker >= 0.9x plain.

- tokens/s: the median of the logged ``tokens_per_s`` after dropping the first log point
  (warm-up). Both loops measure it the same way, inside the step loop: tokens since the last log
  point over the time since then (the Ray worker sums it over ranks and leaves evaluation and
  checkpoint time out).
- overhead: fit wall time less steps x the time per step at that rate. For Ray that is worker
  start-up, placement, Ray Data reading the shards, DDP set-up, and the one final evaluation (on a
  small held-out prefix) and checkpoint. ``ray.init`` is timed on its own, once.
- threads: a Ray worker divides the node's cores among its workers,
  ``torch.set_num_threads(max(1, os.cpu_count() // workers))`` (Ray's logical CPUs,
  ``max(os.cpu_count(), 3)`` here, may exceed the cores); the plain loop gets the 1-worker count.

    python benchmarks/bench_train.py            # small preset, pmix head, ~60 s per case (~5 min)
    python benchmarks/bench_train.py --quick    # tiny preset, ~5 s of steps per case (~2 min)
    python benchmarks/bench_train.py --compile --workers ''   # eager vs train.compile only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch

from geolip.aleph.bank import bank_from_bytes
from geolip.aleph.config import HEADS
from geolip.aleph.data import sample_windows
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import get_preset, with_head
from geolip.aleph.train import build_optimizer, build_scheduler, train, train_step
from geolip.config import apply_changes
from pipelines.aleph.driver import train_aleph
from pipelines.aleph.job import TrainJob
from pipelines.byte_shards import build_byte_shards, read_side
from pipelines.runtime import RunContext, init_ray
from pipelines.tracking import metric_history

REPO = Path(__file__).resolve().parents[1]
VALID = Path(os.environ.get("GEOLIP_SHARED", REPO.parent / "shared")) / "data/wikitext-2/valid.txt"
LOG_POINTS = 6  # the first is warm-up and dropped, the median is over the other five


def steady_rate(values: list[float]) -> float:
    """Median tokens/s without the first log point (kept when it is the only one)."""
    return statistics.median(values[1:] or values)


def tokens_per_step(run_cfg) -> int:
    m, t = run_cfg.model, run_cfg.train
    return t.batch_size * t.accum * m.seq_trigrams * m.n_segments


def make_model(run_cfg, bank) -> AlephLM:
    """The model a Ray worker builds: seeded with ``train.seed``, the train split's bank."""
    torch.manual_seed(run_cfg.train.seed)
    return AlephLM(run_cfg.model, bank if run_cfg.model.uses_bank else None)


def seconds_per_step(run_cfg, bank, data: np.ndarray, budget: float = 2.0) -> float:
    """Median wall time of plain training steps (after one warm-up step) over ~``budget`` s,
    to size the runs; the median shrugs off the stalls of Ray's own start-up next door."""
    model, tcfg = make_model(run_cfg, bank), run_cfg.train
    opt = build_optimizer(model, tcfg)
    sched = build_scheduler(opt, tcfg)
    gen = torch.Generator().manual_seed(0)
    n_tri = run_cfg.model.seq_trigrams * run_cfg.model.n_segments
    train_step(model, opt, sched, [sample_windows(data, tcfg.batch_size, n_tri, gen)], tcfg)
    times: list[float] = []
    while len(times) < 3 or (sum(times) < budget and len(times) < 50):
        w = sample_windows(data, tcfg.batch_size, n_tri, gen)
        t0 = time.perf_counter()
        train_step(model, opt, sched, [w], tcfg, len(times) + 1)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_plain(run_cfg, bank, data: np.ndarray, threads: int, compile: bool = False) -> dict:
    """The single-process loop; ``compile``: with ``train.compile`` (its compile time and
    parity check are in fit and overhead, not in tokens/s)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    tcfg = dataclasses.replace(run_cfg.train, compile=compile)
    try:
        result = train(make_model(run_cfg, bank), data, tcfg)
    finally:
        torch.set_num_threads(previous)
    rates = [row["tokens_per_s"] for row in result.history]
    name = "compiled" if compile else "plain"
    if compile and not result.compile.used:
        print(f"  [compiled] {result.compile.line()}")
        name = "eager!"
    return case(name, run_cfg, rates, result.seconds, result.seconds, threads)


def run_ray(args, run_cfg, workers: int, tmp: Path, threads: int) -> dict:
    job = TrainJob(
        run=run_cfg,
        corpus=VALID.resolve().as_uri(),
        ctx=RunContext.create("bench-train", tmp, workers=workers),
        checkpoint_every=args.steps,  # one checkpoint and evaluation, after the last step
        eval_bytes=args.eval_bytes,
        run_name=f"bench-train-{workers}w-{uuid.uuid4().hex[:8]}",
    )
    t0 = time.perf_counter()
    outcome = train_aleph(job, progress=lambda line: print(f"  [ray-{workers}] {line}"))
    call = time.perf_counter() - t0
    history = metric_history(outcome.tracking_uri, outcome.run_id, "tokens_per_s")
    return case(f"ray-{workers}", run_cfg, [v for _, v in history], outcome.seconds, call, threads)


def case(name: str, run_cfg, rates: list[float], fit: float, call: float, threads: int) -> dict:
    rate = steady_rate(rates)
    steps = run_cfg.train.steps
    return {
        "case": name,
        "global_batch": run_cfg.train.batch_size,
        "threads": threads,
        "steps": steps,
        "tokens_per_s": rate,
        "log_points": rates,
        "fit_s": fit,
        "call_s": call,
        "overhead_s": fit - steps * tokens_per_step(run_cfg) / rate,
    }


def print_table(rows: list[dict]) -> None:
    header = f"{'case':<8}{'batch':>7}{'threads':>9}{'tokens/s':>11}{'vs plain':>10}"
    header += f"{'fit s':>9}{'overhead s':>12}{'call s':>9}"
    print(header)
    print("-" * len(header))
    base = rows[0]["tokens_per_s"]
    for r in rows:
        print(
            f"{r['case']:<8}{r['global_batch']:>7}{r['threads']:>9}{r['tokens_per_s']:>11.0f}"
            f"{r['tokens_per_s'] / base:>9.2f}x{r['fit_s']:>9.1f}{r['overhead_s']:>12.1f}"
            f"{r['call_s']:>9.1f}"
        )


def size_run(args, train_bytes: np.ndarray, threads: int) -> tuple[object, object]:
    """(run config, bank) with ``args.steps`` filled in from a timed step."""
    run_cfg = with_head(get_preset(args.preset), args.head)
    run_cfg = apply_changes(run_cfg, {"train.batch_size": args.batch})
    bank = None
    if run_cfg.model.uses_bank:  # what prepare_job cuts from the same train split
        bank = bank_from_bytes(train_bytes.tobytes(), run_cfg.train.bank_size, {})
    if args.steps is None:
        torch.set_num_threads(threads)
        t_step = seconds_per_step(run_cfg, bank, train_bytes)
        every = max(1, round(args.seconds_per_case / t_step / LOG_POINTS))
        args.steps = every * LOG_POINTS  # whole log intervals: no short, noisy last one
        print(f"one plain step: {t_step * 1000:.0f} ms -> {args.steps} steps per case")
    log_every = max(1, args.steps // LOG_POINTS)
    changes = {"train.steps": args.steps, "train.log_every": log_every}
    return apply_changes(run_cfg, changes), bank


def report(rows: list[dict], ray_init: float) -> None:
    print()
    print_table(rows)
    print(
        f"ray.init (once, in no row): {ray_init:.1f} s. overhead = fit - steps x step time at the "
        "median rate (Ray: start-up + one final evaluation and checkpoint); call = the whole "
        "train_aleph() (+ job preparation, MLflow run, artifacts and plots)"
    )
    one = next((r for r in rows if r["case"] == "ray-1"), None)
    if one is not None:
        ratio = one["tokens_per_s"] / rows[0]["tokens_per_s"]
        verdict = "met" if ratio >= 0.9 else "NOT met"
        print(f"target ray-1 >= 0.90x plain: {ratio:.2f}x -> {verdict}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small", choices=("tiny", "small"))
    ap.add_argument("--head", default="pmix", choices=HEADS)
    ap.add_argument("--batch", type=int, default=8, help="global batch (train.batch_size)")
    ap.add_argument("--steps", type=int, help="steps per case (default: from --seconds-per-case)")
    ap.add_argument("--seconds-per-case", type=float, default=60.0)
    ap.add_argument("--workers", default="1,2", help="Ray Train worker counts ('' for none)")
    ap.add_argument(
        "--compile", action="store_true", help="add the plain loop under train.compile=true"
    )
    ap.add_argument("--eval-bytes", type=int, default=20_000, help="final held-out evaluation")
    ap.add_argument("--quick", action="store_true", help="tiny preset, ~5 s of steps per case")
    ap.add_argument("--save", type=Path, help="also write the measurements as JSON here")
    args = ap.parse_args()
    if args.quick:
        args.preset, args.seconds_per_case = "tiny", 5.0
    return args


def main() -> None:
    import ray

    args = parse_args()
    workers = [int(w) for w in args.workers.split(",") if w]
    if not VALID.exists():
        raise SystemExit(f"corpus not found: {VALID} (set GEOLIP_SHARED)")
    print(
        f"load average before: {os.getloadavg()[0]:.2f}  ({os.cpu_count()} cores seen by torch,"
        f" shared with other work)"
    )
    os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"  # Ray's processes inherit it
    t0 = time.perf_counter()
    init_ray(cpus=max(os.cpu_count() or 1, 3))
    ray_init = time.perf_counter() - t0
    cpus = int(ray.cluster_resources().get("CPU", 1))
    print(f"ray.init: {ray_init:.1f} s  ({cpus} logical CPUs in Ray, {os.cpu_count()} cores)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    try:
        shards = build_byte_shards(VALID.resolve().as_uri(), tmp, progress=lambda s: None)
        train_bytes = read_side(shards, "train")
        cores = os.cpu_count() or 1
        plain_threads = cores  # what a lone Ray worker sets: cores // 1
        run_cfg, bank = size_run(args, train_bytes, plain_threads)
        m = run_cfg.model
        print(
            f"preset {args.preset}, head {args.head}: d={m.d_model} L={m.n_layers} "
            f"T={m.seq_trigrams}, global batch {args.batch}, {args.steps} steps, log every "
            f"{run_cfg.train.log_every}; train split {len(train_bytes):,} bytes; "
            f"torch {torch.__version__}, ray {ray.__version__}"
        )
        print(f"plain loop threads = the 1-worker Ray count: {plain_threads} (cores // workers)")
        rows = [run_plain(run_cfg, bank, train_bytes, plain_threads)]
        if args.compile:
            rows.append(run_plain(run_cfg, bank, train_bytes, plain_threads, compile=True))
        for w in workers:
            rows.append(run_ray(args, run_cfg, w, tmp, max(1, cores // w)))
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, ray_init)
    if args.save:
        raw = {"args": {k: str(v) for k, v in vars(args).items()}, "ray_init_s": ray_init}
        raw.update(ray_cpus=cpus, cores=os.cpu_count(), cases=rows)
        args.save.write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
