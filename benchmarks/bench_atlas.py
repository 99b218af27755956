"""Atlas build throughput (MB/s end to end and per stratum) against two baselines, peak memory,
and an estimate for WikiText-103.

Corpora: ``shared/data/wikitext-2/valid.txt`` (1.1 MB) and larger samples made by repeating it,
written to a temporary directory and deleted afterwards. Every case runs in its own subprocess so
that its peak memory is its own: the driver's ``ru_maxrss`` and the peak summed RSS of its whole
process tree (Ray workers included; shared pages are counted once per process, so an over-count).

- ``atlas``: ``atlas.build.build_atlas`` end to end (Ray start, staging, map, merge, select,
  Parquet). Its per-stratum rate is the map-phase extraction alone, one core, on the first
  ``PER_STRATUM_MB`` of the sample.
- ``counter``: ``collections.Counter`` over Python slices (``atlas.reference``'s definitions),
  one core, counts and document frequencies, nothing written.
- ``duckdb``: one DuckDB SQL pipeline per stratum (n-grams, counts, doc_freq, min_count, rank,
  ``COPY`` to Parquet), all cores.

    python benchmarks/bench_atlas.py                  # sizes 1,10,50 MB (~10 min on 2 cores)
    python benchmarks/bench_atlas.py --sizes 1,10     # skip the 50 MB case
    python benchmarks/bench_atlas.py --quick          # smoke run: a 0.25 MB prefix (~20 s)
    python benchmarks/bench_atlas.py --sizes 1,200    # steady state at 200 MB, 1 vs 2 workers

The steady-state table is the largest build run again on the Ray the first one started, as a
job on a running cluster would run it, next to the same on one worker (``--scaling-mb``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from atlas_baselines import counter_baseline, duckdb_baseline, read_docs

REPO = Path(__file__).resolve().parents[1]
VALID = Path(os.environ.get("GEOLIP_SHARED", REPO.parent / "shared")) / "data/wikitext-2/valid.txt"
STRATA = ("char", "word", "unicode")
PER_STRATUM_MB = 10
WT103_MB = 540
TARGET = 12_900_000
STEADY_TARGET = 20.0  # MB/s end to end on a running Ray, 2 workers
MB = 1e6


def _blocks(docs: list[bytes], block_bytes: int, limit: float) -> list[list[bytes]]:
    """The first ``limit`` bytes of ``docs`` cut into blocks of ``block_bytes``, as the build."""
    blocks, current, in_block, total = [], [], 0, 0
    for doc in docs:
        if total >= limit:
            break
        current.append(doc)
        in_block, total = in_block + len(doc), total + len(doc)
        if in_block >= block_bytes:
            blocks.append(current)
            current, in_block = [], 0
    return blocks + ([current] if current else [])


def atlas_per_stratum(docs: list[bytes]) -> dict:
    """Map-phase extraction (``atlas.extract.count_block``), one core, on at most
    ``PER_STRATUM_MB``: seconds in all, and per stratum where its extractor can be found.

    Per stratum, the module's ``*<stratum>*_chunks``/``_table`` functions are wrapped with timers
    (names only, so signature changes do not break this); a stratum not found reports None.
    """
    from atlas import extract
    from atlas.config import AtlasConfig

    cfg = AtlasConfig()
    blocks = _blocks(docs, cfg.block_bytes, PER_STRATUM_MB * MB)
    seconds: dict[str, float | None] = dict.fromkeys(STRATA, 0.0)
    hooks = {
        name: (stratum, getattr(extract, name))
        for name in dir(extract)
        for stratum in STRATA
        if name.lstrip("_").startswith(stratum) and name.endswith(("_chunks", "_table"))
    }

    def timed(stratum, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[stratum] += time.perf_counter() - start

        return wrapper

    try:
        for name, (stratum, fn) in hooks.items():
            setattr(extract, name, timed(stratum, fn))
        start = time.perf_counter()
        for block in blocks:
            extract.count_block(block, cfg)
        total = time.perf_counter() - start
    finally:
        for name, (_, fn) in hooks.items():
            setattr(extract, name, fn)
    found = {stratum for stratum, _ in hooks.values()}
    seconds = {s: (v if s in found and v > 0 else None) for s, v in seconds.items()}
    return {"seconds": seconds, "total": total, "n_bytes": sum(len(d) for b in blocks for d in b)}


def run_case(method: str, corpus: Path, work: Path, workers: int) -> dict:
    """One measurement (in the subprocess): seconds end to end, per stratum, bytes counted."""
    start = time.perf_counter()
    if method == "atlas":
        from functools import partial

        from atlas.build import build_atlas
        from pipelines.runtime import init_ray

        start_ray = partial(init_ray, cpus=workers)
        result = build_atlas(f"file:{corpus}", work / "atlas", init_ray=start_ray, progress=False)
        seconds = time.perf_counter() - start
        # Again on the Ray that is now running, as a job on a running cluster would.
        start = time.perf_counter()
        warm = build_atlas(f"file:{corpus}", work / "warm", progress=False)
        m = result.manifest
        out = {"seconds": seconds, "n_bytes": m["corpus"]["n_bytes"], "phases": m["phases"]}
        out["warm_seconds"] = time.perf_counter() - start
        out["warm_phases"] = warm.manifest["phases"]
        out["warm_count_seconds"] = warm.manifest["map_tasks"]["count_seconds"]
        out["strata"] = {
            s: {k: m["strata"][s][k] for k in ("distinct_total", "kept")} for s in STRATA
        }
        out["per_stratum"] = atlas_per_stratum(read_docs(corpus))
        return out
    docs = read_docs(corpus)
    if method == "counter":
        per = counter_baseline(docs)
    else:
        per = duckdb_baseline(docs, work / "duckdb")
    n = sum(map(len, docs))
    return {
        "seconds": time.perf_counter() - start,
        "n_bytes": n,
        "per_stratum": {"seconds": per, "total": sum(per.values()), "n_bytes": n},
    }


def tree_rss(pid: int) -> int:
    """Summed resident bytes of ``pid`` and all its descendants, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack += children.get(p, [])
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * os.sysconf(
                "SC_PAGESIZE"
            )
        except (OSError, ValueError, IndexError):
            continue
    return total


def measure(method: str, corpus: Path, work: Path, workers: int) -> dict:
    """Run one case in a subprocess, sampling its process tree's RSS every 0.2 s."""
    cmd = [sys.executable, __file__, "--case", method, "--corpus", str(corpus)]
    cmd += ["--work", str(work), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    sampler.join()
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{method} on {corpus} failed:\n{stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["tree_peak_mb"] = peak[0] / 2**20
    return result


def make_corpus(size_mb: float, tmp: Path) -> Path:
    """valid.txt itself (size 1), a line-aligned prefix (< 1) or whole repeats of it (> 1)."""
    data = VALID.read_bytes()
    if abs(size_mb - 1) < 1e-9:
        return VALID
    if size_mb < 1:
        cut = data.index(b"\n", int(size_mb * len(data))) + 1
        body = data[:cut]
    else:
        body = data * max(1, round(size_mb * MB / len(data)))
    path = tmp / f"sample-{size_mb:g}MB.txt"
    path.write_bytes(body)
    return path


def make_shuffled(size_mb: float, tmp: Path, seed: int = 0) -> Path:
    """Repeats of valid.txt with each line's words shuffled anew: unlike plain repeats, its word
    bigrams and trigrams keep growing, so the select phase sees many candidates (its cost per
    candidate is what the WikiText-103 estimate needs)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lines = VALID.read_bytes().split(b"\n")
    out, size = [], 0
    while size < size_mb * MB:
        for line in lines:
            words = line.split(b" ")
            if len(words) > 2:
                words = [words[i] for i in rng.permutation(len(words))]
            out.append(b" ".join(words))
            size += len(line) + 1
    path = tmp / f"shuffled-{size_mb:g}MB.txt"
    path.write_bytes(b"\n".join(out))
    return path


def heaps(tmp: Path) -> dict[str, dict]:
    """Growth of each stratum's distinct grams and candidates (count >= min_count) over prefixes
    of real text (1/8 .. 1 of valid.txt), as power laws ``∝ bytes ** beta`` (Heaps' law).
    Repeated samples cannot show this: they hold no new grams."""
    import numpy as np

    from atlas.config import AtlasConfig
    from atlas.extract import count_block

    cfg, rows = AtlasConfig(), []
    for frac in (0.125, 0.25, 0.5, 1.0):
        docs = read_docs(make_corpus(frac, tmp))
        counts = count_block(docs, cfg).strata
        row = {"mb": sum(map(len, docs)) / MB}
        for s in STRATA:
            c = counts[s].column("count").to_numpy()
            row[s] = (len(c), int(np.sum(c >= cfg.min_count)))
        rows.append(row)
    x = np.log([r["mb"] for r in rows])
    out = {}
    for s in STRATA:
        distinct, kept = (np.array([r[s][k] for r in rows]) for k in (0, 1))
        out[s] = {
            "mb": rows[-1]["mb"],
            "distinct": int(distinct[-1]),
            "kept": int(kept[-1]),
            "beta_distinct": float(np.polyfit(x, np.log(np.maximum(distinct, 1)), 1)[0]),
            "beta_kept": float(np.polyfit(x, np.log(np.maximum(kept, 1)), 1)[0]),
        }
    return out


def _rate(n_bytes: float, seconds: float | None) -> float | None:
    return n_bytes / MB / seconds if seconds else None


def _fmt(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.2f}"


def print_results(results: list[dict]) -> None:
    """One row per (size, method): MB/s end to end and per stratum, memory."""
    print("\n== throughput (MB of training text per second) ==")
    head = f"{'size MB':>8} {'method':>8} {'seconds':>8} {'MB/s':>7} {'running':>8}"
    head += f" {'count MB/s':>10}" + "".join(f" {s + ' MB/s':>13}" for s in STRATA)
    head += f" {'driver MB':>10} {'tree MB':>8}"
    print(head)
    for r in results:
        per = r["per_stratum"]
        rates = f" {_rate(per['n_bytes'], per['total']):>10.2f}"
        rates += "".join(f" {_fmt(_rate(per['n_bytes'], per['seconds'][s])):>13}" for s in STRATA)
        # A running cluster (ray job submit) skips the local Ray start: the second build.
        warm = _fmt(_rate(r["n_bytes"], r["warm_seconds"])) if "warm_seconds" in r else ""
        print(
            f"{r['n_bytes'] / MB:>8.2f} {r['method']:>8} {r['seconds']:>8.1f} "
            f"{_rate(r['n_bytes'], r['seconds']):>7.2f} {warm:>8}{rates} {r['maxrss_mb']:>10.0f} "
            f"{r['tree_peak_mb']:>8.0f}"
        )
    notes = [
        "(MB/s: end to end; running: a second build on the Ray the first one started, as on a",
        " running cluster (Ray, its helper actors and its worker processes already up).",
        " count and per-stratum MB/s: atlas = map-phase extraction only, 1 core,",
        " first 10 MB; counter = 1 core; duckdb = all cores, Parquet output included.",
        " driver MB: the case process's ru_maxrss; tree MB: peak summed RSS incl. Ray workers)",
    ]
    print("\n".join(notes))
    print("\n== speed-up of the atlas build, end to end ==")
    counter_rate = None
    for size in sorted({r["size"] for r in results}):
        by = {r["method"]: r for r in results if r["size"] == size}
        atlas = _rate(by["atlas"]["n_bytes"], by["atlas"]["seconds"])
        if "counter" in by:
            counter_rate = _rate(by["counter"]["n_bytes"], by["counter"]["seconds"])
            note = ""
        else:
            note = " (counter rate of the largest size it ran at: it is linear in bytes)"
        vs_counter = f"{atlas / counter_rate:.1f}x" if counter_rate else "n/a"
        vs_duck = f"{atlas / _rate(by['duckdb']['n_bytes'], by['duckdb']['seconds']):.1f}x"
        print(f"{size:>6g} MB sample: {vs_counter} the Counter baseline{note}, {vs_duck} DuckDB")


def print_steady(results: list[dict], scaling: dict | None, workers: int) -> None:
    """The largest build again on the Ray the first one started (a job on a running cluster),
    per phase, with the same on 1 worker when measured, against the 20 MB/s target."""
    atlas = [r for r in results if r["method"] == "atlas" and "warm_seconds" in r]
    if not atlas:
        return
    big = max(atlas, key=lambda r: r["n_bytes"])
    rows = [(workers, big)] + ([(1, scaling)] if scaling and "warm_seconds" in scaling else [])
    print(f"\n== steady state on a running Ray: {big['n_bytes'] / MB:.1f} MB ==")
    names = list(big["warm_phases"])
    head = f"{'workers':>8} {'seconds':>8} {'MB/s':>6} {'map MB/s':>9}"
    print(head + "".join(f" {n:>7}" for n in names) + f" {'other':>7} {'count s':>8}")
    for n, r in rows:
        ph = r["warm_phases"]
        other = r["warm_seconds"] - sum(ph.values())
        line = f"{n:>8} {r['warm_seconds']:>8.1f} {_rate(r['n_bytes'], r['warm_seconds']):>6.1f}"
        line += f" {_rate(r['n_bytes'], ph['map']):>9.1f}" + "".join(
            f" {ph[k]:>7.2f}" for k in names
        )
        print(line + f" {other:>7.2f} {r.get('warm_count_seconds', float('nan')):>8.1f}")
    if len(rows) == 2:
        speed = rows[1][1]["warm_seconds"] / big["warm_seconds"]
        map_speed = rows[1][1]["warm_phases"]["map"] / big["warm_phases"]["map"]
        print(f"  {workers} vs 1 worker: {speed:.2f}x end to end, {map_speed:.2f}x the map phase")
    rate = _rate(big["n_bytes"], big["warm_seconds"])
    verdict = "met" if rate >= STEADY_TARGET else "NOT met"
    print(
        f"  target >= {STEADY_TARGET:.0f} MB/s on {workers} workers: {rate:.1f} MB/s -> {verdict}"
    )
    print("  (count s: the map tasks' counting summed over tasks; other: checks, publish, report)")


def _growth_factor(growth: dict, key: str, ratio: float) -> float:
    """Count-weighted growth of ``key`` over the strata when the text grows ``ratio``-fold."""
    base = sum(g[key] for g in growth.values())
    grown = sum(g[key] * ratio ** g[f"beta_{key}"] for g in growth.values())
    return grown / base if base else 1.0


def _linear(atlas: list[dict]) -> tuple[dict, dict]:
    """Per phase (and ``other``: Ray start, imports): ``(seconds at 0 MB, seconds per MB)`` from
    the smallest and the largest build (the longest lever on a noisy shared machine), so fixed
    costs do not pass for throughput."""
    ordered = sorted(atlas, key=lambda r: r["n_bytes"])
    runs = (ordered[0], ordered[-1])
    parts = [{**r["phases"], "other": r["seconds"] - sum(r["phases"].values())} for r in runs]
    sizes = [r["n_bytes"] / MB for r in runs]
    fixed, slope = {}, {}
    for k in parts[-1]:
        slope[k] = max(0.0, (parts[1][k] - parts[0][k]) / (sizes[1] - sizes[0]))
        fixed[k] = max(0.0, parts[1][k] - slope[k] * sizes[1])
    return fixed, slope


def _select_model(big: dict, shuffled: dict | None, candidates: float) -> tuple[float, str]:
    """Select seconds at ``candidates`` kept grams: the fixed cost of the largest build plus a
    per-candidate rate from the word-shuffled build (many more candidates), else scaled as is."""
    kept = sum(s["kept"] for s in big["strata"].values())
    sel = big["phases"]["select"]
    if shuffled:
        extra = sum(s["kept"] for s in shuffled["strata"].values()) - kept
        rate = (shuffled["phases"]["select"] - sel) / extra if extra > 0 else 0.0
        if rate > 0:
            how = f"{sel:.1f} s + {rate * 1e6:.2f} s per 1M more candidates (word-shuffled build)"
            return sel + rate * max(0.0, candidates - kept), how
    return sel * candidates / kept, f"{sel:.1f} s x{candidates / kept:.0f} (candidate growth)"


def extrapolate(
    results: list[dict], scaling: dict | None, growth: dict, workers: int, shuffled: dict | None
) -> None:
    """WikiText-103 (540 MB) on 1, 2 and 16 cores from the measured builds; the model is printed
    with the numbers."""
    atlas = [r for r in results if r["method"] == "atlas"]
    if len(atlas) < 2:
        print("\n(the WikiText-103 estimate needs builds at two sizes, e.g. --sizes 1,50)")
        return
    big = max(atlas, key=lambda r: r["n_bytes"])
    fixed, slope = _linear(atlas)
    same = next((r for r in atlas if scaling and r["size"] == scaling["size"]), None)
    if scaling and same:
        s_map = scaling["phases"]["map"] / same["phases"]["map"]
        s_merge = scaling["phases"]["merge"] / same["phases"]["merge"]
        how = f"measured at {scaling['size']:g} MB, 1 vs {workers} workers"
    else:
        s_map = s_merge = float(workers)
        how = "not measured: ideal scaling assumed"
    eff_map, eff_merge = min(1.0, s_map / workers), min(1.0, s_merge / workers)
    # Repeated text has no new distinct grams, so each block's partial counts (the merge input)
    # are those of 1.1 MB; a real 4 MB block holds more distinct grams (Heaps growth). Select
    # reads every candidate, whose number grows with the corpus.
    distinct_r = _growth_factor(growth, "distinct", 4 / growth["char"]["mb"])
    per_stratum = {s: g["kept"] * (WT103_MB / g["mb"]) ** g["beta_kept"] for s, g in growth.items()}
    candidates = sum(per_stratum.values())
    map1 = slope["map"] * (s_map if workers > 1 else 1.0)
    merge1 = slope["merge"] * (s_merge if workers > 1 else 1.0) * distinct_r
    select, select_how = _select_model(big, shuffled, candidates)
    base = sum(v for k, v in fixed.items() if k != "select") + select
    base += slope["stage"] * WT103_MB
    built = ", ".join(f"{r['size']:g}" for r in atlas)
    lines = [
        "\n== estimate for WikiText-103 (540 MB) ==",
        f"model from the builds of {built} MB ({workers} workers): fixed",
        f"  {sum(fixed.values()):.1f} s (Ray start, task start-up), stage {slope['stage']:.3f} s/MB",
        f"  (serial), map {map1:.3f} s/MB per core, merge {merge1:.3f} s/MB per core (incl.",
        f"  x{distinct_r:.2f} for the distinct grams of real 4 MB blocks), select {select:.1f} s",
        f"  for ~{candidates / 1e6:.1f}M candidates ({select_how}).",
        f"  {workers}-worker speed-up: map {s_map:.2f}, merge {s_merge:.2f} ({how});",
        "  the same efficiency is assumed at 16 cores (135 map tasks of 4 MB, 2 x cores merge",
        "  buckets).",
    ]
    print("\n".join(lines))
    for cores in (1, 2, 16):
        t = base + map1 * WT103_MB / (cores * (eff_map if cores > 1 else 1.0))
        t += merge1 * WT103_MB / (cores * (eff_merge if cores > 1 else 1.0))
        print(f"  {cores:>2} cores: ~{t / 60:5.1f} min ({WT103_MB / t:5.1f} MB/s)")
    print("\n== does WikiText-103 fill the 12.9M target? (Heaps fit on prefixes of valid.txt) ==")
    for s, g in growth.items():
        print(
            f"  {s:>7}: {g['kept']:>8,} candidates at {g['mb']:.2f} MB, beta {g['beta_kept']:.2f}"
            f" -> ~{per_stratum[s] / 1e6:6.1f}M at 540 MB"
        )
    verdict = "reached" if candidates >= TARGET else "NOT reached"
    print(f"  total ~{candidates / 1e6:.1f}M candidates (count >= 2) vs 12.9M: {verdict} (a 500x")
    print("  extrapolation from 1 MB: an order-of-magnitude estimate, not a measurement)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1,10,50", help="sample sizes in MB (1 = valid.txt)")
    p.add_argument("--quick", action="store_true", help="smoke run on a 0.25 MB prefix")
    p.add_argument("--workers", type=int, default=2, help="Ray CPUs of the atlas build")
    p.add_argument("--counter-max-mb", type=float, default=10, help="largest Counter case")
    p.add_argument(
        "--scaling-mb",
        type=float,
        help="size of the 1-worker build (default: the largest; 0: skip)",
    )
    p.add_argument(
        "--shuffled-mb", type=float, default=20, help="word-shuffled build for select (0: skip)"
    )
    p.add_argument("--save", type=Path, help="also write the raw measurements as JSON here")
    p.add_argument("--case", choices=("atlas", "counter", "duckdb"), help=argparse.SUPPRESS)
    p.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.case:  # inside the measuring subprocess
        result = run_case(args.case, args.corpus, args.work, args.workers)
        result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result), flush=True)
        return
    print(f"load average before: {os.getloadavg()[0]:.2f} (2-core machine shared with others)")
    sizes = [0.25] if args.quick else [float(x) for x in args.sizes.split(",")]
    scaling_mb = max(sizes) if args.scaling_mb is None else args.scaling_mb
    if args.quick:
        scaling_mb = 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-atlas-"))
    results, scaling = [], None
    try:
        for size in sizes:
            corpus = make_corpus(size, tmp)
            for method in ("atlas", "duckdb", "counter"):
                if method == "counter" and size > args.counter_max_mb:
                    continue
                r = measure(method, corpus, tmp / f"{method}-{size:g}", args.workers)
                r.update(method=method, size=size)
                results.append(r)
                print(f"{size:g} MB {method}: {r['seconds']:.1f} s", flush=True)
            if size == scaling_mb:
                scaling = measure("atlas", corpus, tmp / "scaling", 1)
                scaling["size"] = size
                print(f"{size:g} MB atlas, 1 worker: {scaling['seconds']:.1f} s", flush=True)
            if corpus != VALID:
                corpus.unlink()
        shuffled = None
        if args.shuffled_mb and not args.quick:
            shuffled = measure(
                "atlas", make_shuffled(args.shuffled_mb, tmp), tmp / "shuffled", args.workers
            )
            print(f"{args.shuffled_mb:g} MB word-shuffled atlas: {shuffled['seconds']:.1f} s")
        growth = heaps(tmp)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        if args.save:
            raw = {"results": results, "scaling": scaling, "growth": growth, "shuffled": shuffled}
            args.save.write_text(json.dumps(raw, indent=1))
        print_results(results)
        print_steady(results, scaling, args.workers)
        extrapolate(results, scaling, growth, args.workers, shuffled)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
