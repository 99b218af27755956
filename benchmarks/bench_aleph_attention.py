"""Aleph attention vs causal softmax attention on CPU: training-pass time, peak memory, decode.

One attention layer of the 23M tier (B=1, d=512, H=8, d_h=64, K=64, D=4, τ=0.1) over T trigrams:

- ``naive``: the prefix-sum oracle (materialises [B, H, T, 2K, d_h]; skipped past ~6 GB);
- ``chunk``: the parallel chunked scan, at every chunk size in ``--chunks`` (the best is reported);
- ``sdpa``: ``scaled_dot_product_attention(is_causal=True)`` on q, k, v: [1, 8, T, 64];
- ``compiled``: the chunk case (address + scan, at its best chunk size) under ``torch.compile``,
  as ``train.compile`` runs it, next to SDPA under ``torch.compile`` (up to ``COMPILED_SDPA_MAX_T``:
  one fused kernel already, it gains nothing); the compile itself is an untimed warm-up.

The aleph timings include the address (W_q, W_k: d -> H·D, rownorm, oriented address through the
shared codebook); W_v and W_o are left out of both sides (identical cost). Each case runs in a
fresh subprocess so that ``ru_maxrss`` minus a baseline taken after import and input creation is
that case's peak memory. ``fwd+bwd`` is forward + backward of the same iteration. Times are the
minimum over timed iterations after one warm-up: at least ``--repeats`` of them, more while a
case has used under ~2 s (the minimum filters out other processes' load on a shared machine),
one when the warm-up took over ``SLOW_S``, and the warm-up itself when it took over
``VERY_SLOW_S`` (SDPA and the oracle at long T).

    python benchmarks/bench_aleph_attention.py            # full run, a few minutes on 2 cores
    python benchmarks/bench_aleph_attention.py --quick    # smoke run, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from geolip.geometry.address import oriented_address
from geolip.geometry.sphere import rownorm
from geolip.ops.aleph_attention import (
    AttentionState,
    aleph_attention_chunk,
    aleph_attention_cumsum,
    aleph_attention_step,
    aleph_decode_step,
    zero_state,
)

D_MODEL, HEADS, HEAD_DIM, K, D_ADDR, TAU, LAYERS = 512, 8, 64, 64, 4, 0.1, 8
NAIVE_LIMIT_BYTES = 6e9  # the oracle's [B, H, T, 2K, d_h] fp32 prefix tensor
SLOW_S, VERY_SLOW_S, FILL_S, MAX_ITERS = 3.0, 20.0, 2.0, 20
COMPILED_SDPA_MAX_T = 8192
THREADS = 2
DECODE_TARGET_S = 1.5e-3  # per token, all L layers (issue 20)


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def aleph_inputs(T: int, gen: torch.Generator) -> dict:
    """x: [1, T, d] and v: [1, H, T, d_h] (leaves); W_q, W_k: [H·D, d]; A_raw: [K, D]."""
    leaf = lambda *s: torch.randn(*s, generator=gen).requires_grad_()  # noqa: E731
    Wq = torch.linalg.qr(torch.randn(D_MODEL, HEADS * D_ADDR, generator=gen))[0].T
    Wk = torch.linalg.qr(torch.randn(D_MODEL, HEADS * D_ADDR, generator=gen))[0].T
    return {
        "x": leaf(1, T, D_MODEL),
        "v": leaf(1, HEADS, T, HEAD_DIM),
        "Wq": Wq.contiguous().requires_grad_(),
        "Wk": Wk.contiguous().requires_grad_(),
        "A_raw": leaf(K, D_ADDR),
    }


def addresses(x, Wq, Wk, A_raw):
    """x: [B, T, d] -> f, g: [B, H, T, 2K]: the per-head query and key addresses."""
    B, T, _ = x.shape
    A = rownorm(A_raw)
    q = (x @ Wq.T).view(B, T, HEADS, D_ADDR).transpose(1, 2)
    k = (x @ Wk.T).view(B, T, HEADS, D_ADDR).transpose(1, 2)
    return oriented_address(q, A, TAU), oriented_address(k, A, TAU)


def make_case(impl: str, T: int, chunk: int, seed: int = 0):
    """Return (forward closure -> o: [1, H, T, d_h], leaves to clear grads of); an ``impl``
    ending in ``c`` is the same case under ``torch.compile``."""
    if impl.endswith("c"):
        forward, leaves = make_case(impl[:-1], T, chunk, seed)
        return torch.compile(forward), leaves
    gen = torch.Generator().manual_seed(seed)
    if impl == "sdpa":
        q, k, v = (
            torch.randn(1, HEADS, T, HEAD_DIM, generator=gen).requires_grad_() for _ in range(3)
        )
        return (lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)), [q, k, v]
    inp = aleph_inputs(T, gen)

    def forward():
        f, g = addresses(inp["x"], inp["Wq"], inp["Wk"], inp["A_raw"])
        if impl == "naive":
            return aleph_attention_cumsum(f, g, inp["v"])[0]
        return aleph_attention_chunk(f, g, inp["v"], chunk=chunk, parallel=True)[0]

    return forward, list(inp.values())


def run_case(spec: dict) -> dict:
    """Time one (impl, T, chunk) case in this process; peak memory relative to after set-up."""
    torch.set_num_threads(THREADS)
    forward, leaves = make_case(spec["impl"], spec["T"], spec["chunk"])
    cot = torch.randn(1, HEADS, spec["T"], HEAD_DIM)
    base = maxrss_mb()
    fwd, fb = [], []

    def once():
        for t in leaves:
            t.grad = None
        t0 = time.perf_counter()
        o = forward()
        t1 = time.perf_counter()
        o.backward(cot)
        fwd.append(t1 - t0)
        fb.append(time.perf_counter() - t0)

    once()  # warm-up
    if spec["impl"].endswith("c"):  # that was the compile: warm up the compiled code itself
        fwd.clear(), fb.clear()
        once()
    warm = fb[0]
    if warm > VERY_SLOW_S:  # reported as 0 timed iterations: the cold warm-up itself
        return {"fwd": fwd[0], "fb": warm, "mb": maxrss_mb() - base, "iters": 0}
    fwd.clear(), fb.clear()
    want = 1 if warm > SLOW_S else spec["repeats"]
    while len(fb) < want or (sum(fb) < FILL_S and len(fb) < MAX_ITERS):
        once()
    return {"fwd": min(fwd), "fb": min(fb), "mb": maxrss_mb() - base, "iters": len(fb)}


def spawn_case(spec: dict, timeout: float, in_process: bool = False) -> dict:
    """Run ``run_case`` in a fresh interpreter; a crash or timeout comes back as a status string.

    ``in_process`` (the smoke run) skips the interpreter start-up and with it the memory column.
    """
    if in_process:
        return {**run_case(spec), "mb": None}
    cmd = [sys.executable, os.path.abspath(__file__), "--case", json.dumps(spec)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"status": "OOM" if p.returncode in (-9, 137) else f"rc={p.returncode}"}


def train_table(lengths, chunks, repeats, timeout, in_process=False, compiled=True):
    rows = []
    for T in lengths:
        row = {"T": T}
        naive_bytes = 1 * HEADS * T * 2 * K * HEAD_DIM * 4
        specs = [("sdpa", 0)] + [("chunk", c) for c in chunks]
        if naive_bytes <= NAIVE_LIMIT_BYTES:
            specs.insert(0, ("naive", 0))
        else:
            row["naive"] = {"status": "OOM-skip"}
        for impl, c in specs:
            spec = {"impl": impl, "T": T, "chunk": c, "repeats": repeats}
            res = spawn_case(spec, timeout, in_process)
            row[f"{impl}{c}" if c else impl] = res
            print(f"  T={T:<6} {impl}{c or '':<4} {fmt_res(res)}", flush=True)
        ok = [c for c in chunks if "fb" in row.get(f"chunk{c}", {})]
        if ok:
            best = min(ok, key=lambda c: row[f"chunk{c}"]["fb"])
            row["chunk"], row["best_chunk"] = row[f"chunk{best}"], best
            if compiled:
                compiled_specs = [("chunkc", best)] + [("sdpac", 0)] * (T <= COMPILED_SDPA_MAX_T)
                for impl, c in compiled_specs:
                    spec = {"impl": impl, "T": T, "chunk": c, "repeats": repeats}
                    row[impl] = spawn_case(spec, timeout, in_process)
                    print(f"  T={T:<6} {impl}{c or '':<4} {fmt_res(row[impl])}", flush=True)
        rows.append(row)
    return rows


def fmt_res(r: dict) -> str:
    if "fb" not in r:
        return r.get("status", "?")
    mb = "-" if r["mb"] is None else f"{r['mb']:.0f}"
    return f"fwd {r['fwd']:.3f}s  fwd+bwd {r['fb']:.3f}s  peak {mb} MB  ({r['iters'] or 'cold warm-up'} timed)"


def cell(r: dict | None, key: str, fmt: str) -> str:
    if not r or r.get(key) is None:
        return (r or {}).get("status", "-")
    return format(r[key], fmt)


def ratio(a: dict | None, b: dict | None) -> float | None:
    if a and b and "fb" in a and "fb" in b:
        return a["fb"] / b["fb"]
    return None


def print_train(rows):
    head = (
        f"{'T':>6} | {'naive fwd':>9} {'f+b':>8} {'MB':>7} | {'chunk fwd':>9} {'f+b':>7} "
        f"{'MB':>5} {'C*':>4} | {'sdpa fwd':>8} {'f+b':>8} {'MB':>5} | {'sdpa/chunk':>10} "
        f"{'naive/chunk':>11}"
    )
    print("\nTraining pass, one layer (seconds, min over repeats; MB = peak RSS over baseline)")
    print(head)
    print("-" * len(head))
    for r in rows:
        n, c, s = r.get("naive"), r.get("chunk"), r.get("sdpa")
        sc, nc = ratio(s, c), ratio(n, c)
        print(
            f"{r['T']:>6} | {cell(n, 'fwd', '9.3f'):>9} {cell(n, 'fb', '8.3f'):>8} "
            f"{cell(n, 'mb', '7.0f'):>7} | {cell(c, 'fwd', '9.3f'):>9} {cell(c, 'fb', '7.3f'):>7} "
            f"{cell(c, 'mb', '5.0f'):>5} {r.get('best_chunk', '-'):>4} | "
            f"{cell(s, 'fwd', '8.3f'):>8} {cell(s, 'fb', '8.3f'):>8} {cell(s, 'mb', '5.0f'):>5} | "
            f"{'-' if sc is None else f'{sc:.1f}x':>10} {'-' if nc is None else f'{nc:.1f}x':>11}"
        )
    print("C* = the chunk size with the fastest fwd+bwd; per-chunk lines are printed above.")
    if any("chunkc" in r for r in rows):
        print_compiled(rows)


def print_compiled(rows):
    """fwd+bwd under torch.compile (what train.compile runs) against SDPA eager and compiled."""
    head = f"{'T':>6} | {'chunk f+b':>9} {'compiled':>9} {'gain':>6} | {'sdpa f+b':>8} "
    head += f"{'compiled':>9} | {'sdpa/compiled chunk':>19}"
    print("\nUnder torch.compile (seconds, fwd+bwd; the same chunk size C*)")
    print(head)
    print("-" * len(head))
    for r in rows:
        c, cc, s, sc = (r.get(k) for k in ("chunk", "chunkc", "sdpa", "sdpac"))
        gain, vs = ratio(c, cc), ratio(s, cc)
        print(
            f"{r['T']:>6} | {cell(c, 'fb', '9.4f'):>9} {cell(cc, 'fb', '9.4f'):>9} "
            f"{'-' if gain is None else f'{gain:.2f}x':>6} | {cell(s, 'fb', '8.4f'):>8} "
            f"{cell(sc, 'fb', '9.4f'):>9} | {'-' if vs is None else f'{vs:.2f}x':>19}"
        )


def decode_aleph(T: int, steps: int, gen: torch.Generator, fused: bool = False):
    """Per-token time of L aleph-attention steps (address included) and the state's bytes.

    ``fused``: :func:`aleph_decode_step` in place (what generation runs), else the reference
    step on addresses made by ``oriented_address`` (the step before the fused one).
    """
    inp = [aleph_inputs(1, gen) for _ in range(LAYERS)]
    A_raw = inp[0]["A_raw"].detach()  # one codebook shared by every layer and head
    # A state summarising T tokens: its size (and the step's cost) does not depend on T.
    states = []
    for _ in range(LAYERS):
        M, z = zero_state(1, HEADS, 2 * K, HEAD_DIM)
        z += T / (2 * K)
        states.append(AttentionState(M + torch.randn(M.shape, generator=gen), z))
    nbytes = sum((M.numel() + z.numel()) * M.element_size() for M, z in states)
    assert nbytes == LAYERS * (2 * K * D_MODEL + 2 * K * HEADS) * 4, nbytes
    xs = torch.randn(steps, 1, 1, D_MODEL, generator=gen)
    vs = torch.randn(steps, 1, HEADS, HEAD_DIM, generator=gen)
    step = _fused_layer if fused else _reference_layer
    with torch.no_grad():
        times = []
        for s in range(steps):
            t0 = time.perf_counter()
            A = rownorm(A_raw)  # the model re-normalises its codebook once per layer and token
            for layer in range(LAYERS):
                p = inp[layer]
                states[layer] = step(
                    xs[s], p["Wq"].detach(), p["Wk"].detach(), A, vs[s], states[layer]
                )
            times.append(time.perf_counter() - t0)
    return statistics.median(times), nbytes


def _reference_layer(x, Wq, Wk, A, v, state):
    q = (x @ Wq.T).view(1, 1, HEADS, D_ADDR).transpose(1, 2)
    k = (x @ Wk.T).view(1, 1, HEADS, D_ADDR).transpose(1, 2)
    f, g = oriented_address(q, A, TAU), oriented_address(k, A, TAU)
    return aleph_attention_step(f[:, :, 0], g[:, :, 0], v, state)[1]


def _fused_layer(x, Wq, Wk, A, v, state):
    q = (x[:, 0] @ Wq.T).view(1, HEADS, D_ADDR)
    k = (x[:, 0] @ Wk.T).view(1, HEADS, D_ADDR)
    return aleph_decode_step(q, k, v, A, TAU, state, inplace=True)[1]


def decode_sdpa(T: int, steps: int, gen: torch.Generator):
    """Per-token time of L SDPA reads (one query vs T+1 cached keys) and the KV cache's bytes."""
    cap = T + steps
    cache = [
        [torch.randn(1, HEADS, cap, HEAD_DIM, generator=gen) for _ in range(2)]
        for _ in range(LAYERS)
    ]
    nbytes = LAYERS * 2 * T * D_MODEL * 4
    qkv = torch.randn(steps, 3, 1, HEADS, 1, HEAD_DIM, generator=gen)
    with torch.no_grad():
        times = []
        for s in range(steps):
            t0, pos = time.perf_counter(), T + s
            for Kc, Vc in cache:
                Kc[:, :, pos : pos + 1] = qkv[s, 1]
                Vc[:, :, pos : pos + 1] = qkv[s, 2]
                F.scaled_dot_product_attention(qkv[s, 0], Kc[:, :, : pos + 1], Vc[:, :, : pos + 1])
            times.append(time.perf_counter() - t0)
    return statistics.median(times), nbytes


def decode_table(lengths, steps):
    torch.set_num_threads(THREADS)
    gen = torch.Generator().manual_seed(1)
    print(f"\nDecode, per token over all L={LAYERS} layers' attention (median of {steps} steps)")
    head = (
        f"{'T':>6} | {'step ms':>8} {'fused ms':>8} {'step/fused':>10} {'state bytes':>12} | "
        f"{'sdpa ms':>8} {'KV bytes':>14} {'sdpa/fused':>10}"
    )
    print(head)
    print("-" * len(head))
    rows = []
    for T in lengths:
        decode_aleph(T, 2, gen), decode_aleph(T, 2, gen, fused=True)  # warm-up
        a_dt, a_b = decode_aleph(T, steps, gen)
        f_dt, _ = decode_aleph(T, steps, gen, fused=True)
        s_dt, s_b = decode_sdpa(T, steps, gen)
        rows.append((T, f_dt, a_b, s_dt, s_b))
        print(
            f"{T:>6} | {a_dt * 1e3:8.3f} {f_dt * 1e3:8.3f} {a_dt / f_dt:9.1f}x {a_b:>12,} | "
            f"{s_dt * 1e3:8.3f} {s_b:>14,} {s_dt / f_dt:9.1f}x"
        )
    print(
        f"aleph state = L·(2K·d + 2K·H)·4 = {LAYERS * (2 * K * D_MODEL + 2 * K * HEADS) * 4:,} "
        "bytes (asserted from the tensors); step = the reference step on oriented_address, "
        "fused = aleph_decode_step in place (what generation runs); both include the address "
        "projection, SDPA excludes every projection."
    )
    return rows


def print_targets(rows, dec_rows):
    by_t = {r["T"]: r for r in rows}

    def check(name, value, bound):
        if value is None:
            print(f"  n/a   {name}")
            return
        print(
            f"  {'PASS' if value >= bound else 'FAIL'}  {name}: {value:.2f}x (target >= {bound}x)"
        )

    print("\nTargets")
    for T, bound in ((8192, 2.0), (32768, 5.0)):
        r = by_t.get(T, {})
        check(f"chunk vs SDPA fwd+bwd at T={T}", ratio(r.get("sdpa"), r.get("chunk")), bound)
    r = by_t.get(8192, {})
    check("chunk vs naive fwd+bwd at T=8192", ratio(r.get("naive"), r.get("chunk")), 3.0)
    r = by_t.get(512, {})
    check("chunk vs SDPA fwd+bwd at T=512", ratio(r.get("sdpa"), r.get("chunk")), 1.0)
    if "chunkc" in r:
        best_sdpa = min(
            (x for x in (r.get("sdpa"), r.get("sdpac")) if x and "fb" in x),
            key=lambda x: x["fb"],
            default=None,
        )
        check(
            "compiled chunk vs the faster SDPA (eager or compiled) at T=512",
            ratio(best_sdpa, r["chunkc"]),
            1.0,
        )
    worst = max((dt for _, dt, _, _, _ in dec_rows), default=None)
    if worst is not None:
        ok = "PASS" if worst <= DECODE_TARGET_S else "FAIL"
        print(f"  {ok}  fused decode, slowest T: {worst * 1e3:.2f} ms/token (target <= 1.5 ms)")
    sizes = {b for _, _, b, _, _ in dec_rows}
    print(f"  {'PASS' if len(sizes) == 1 else 'FAIL'}  decode state constant: {sorted(sizes)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="512,2048,8192,32768", help="comma-separated T")
    ap.add_argument("--chunks", default="128,256", help="chunk sizes to try")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--decode-steps", type=int, default=20)
    ap.add_argument("--timeout", type=float, default=420.0, help="seconds per case")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: T in {128, 256}, 1 repeat, in-process"
    )
    ap.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile cases (their compiles)"
    )
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        print("RESULT " + json.dumps(run_case(json.loads(args.case))), flush=True)
        return
    if args.quick:
        args.lengths, args.repeats, args.decode_steps = "128,256", 1, 3
    lengths = [int(t) for t in args.lengths.split(",")]
    chunks = [int(c) for c in args.chunks.split(",")]
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {THREADS} threads, load average {load0:.2f}")
    print(f"B=1 d={D_MODEL} H={HEADS} d_h={HEAD_DIM} K={K} D={D_ADDR} tau={TAU} fp32")
    compiled = not (args.no_compile or args.quick)
    rows = train_table(lengths, chunks, args.repeats, args.timeout, args.quick, compiled)
    print_train(rows)
    dec_rows = decode_table(lengths, args.decode_steps)
    print_targets(rows, dec_rows)
    elapsed, load = time.perf_counter() - t0, os.getloadavg()[0]
    print(f"\ntotal {elapsed:.0f}s, load average {load:.2f}")
    if max(load, load0) > THREADS - 0.5:
        print(f"WARNING: other processes loaded the machine (load {load0:.2f} -> {load:.2f}).")
        print("Timings with 2 threads degrade sharply under contention: re-run when idle.")


if __name__ == "__main__":
    main()
