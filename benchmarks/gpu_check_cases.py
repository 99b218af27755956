"""The checks and benchmark tables of ``gpu_check.py`` (see its docstring). Each check takes
``(device, quick)`` and returns ``(status, detail)``; oracles run in fp64 on the CPU."""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time

import torch
import torch.nn.functional as F

from geolip.geometry.address import oriented_address
from geolip.geometry.sphere import rownorm
from geolip.ops.aleph_attention import (
    AttentionState,
    aleph_attention,
    aleph_attention_chunk,
    aleph_decode_step,
    fla_status,
)
from geolip.ops.bank_lse import bank_logsumexp

TOL = 1e-4  # fp32 on the device against fp64, relative to each tensor's scale
H, DH, K, D, TAU = 8, 64, 64, 4, 0.1  # the 23M tier's attention layer


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def _verdict(errs: dict[str, float], tol: float = TOL) -> tuple[str, str]:
    worst = max(errs, key=errs.get)
    ok = all(e <= tol for e in errs.values())
    return ("PASS" if ok else "FAIL"), f"worst {worst} {errs[worst]:.1e} (tol {tol:.0e})"


def _inputs(T: int, b=1, h=2, k=8, dh=16, seed=0):
    """Realistic addresses through a codebook (fp64, CPU): f, g: [b, h, T, 2k]; v: [b, h, T, dh]."""
    gen = torch.Generator().manual_seed(seed)
    axes = rownorm(torch.randn(k, D, generator=gen, dtype=torch.float64))
    q, kk = (torch.randn(b, h, T, D, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(b, h, T, dh, generator=gen, dtype=torch.float64)
    return oriented_address(q, axes, TAU), oriented_address(kk, axes, TAU), v, (q, kk, axes)


def _attention_parity(device, impl: str, T: int) -> dict[str, float]:
    """Values, gradients of f, g, v and the final state of ``impl`` vs the fp64 cumsum oracle."""
    f, g, v, _ = _inputs(T)
    cot = torch.randn(v.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = {}
    for name, dt, dev, fn in (
        ("ref", torch.float64, "cpu", "cumsum"),
        ("dev", torch.float32, device, impl),
    ):
        leaves = [x.detach().to(dev, dt).clone().requires_grad_() for x in (f, g, v)]
        o, st = aleph_attention(*leaves, impl=fn, chunk=64)
        (o * cot.to(dev, dt)).sum().backward()
        out[name] = [o, st.M, st.z, *(x.grad for x in leaves)]
    names = ("o", "M", "z", "grad f", "grad g", "grad v")
    return {n: _rel(a, b) for n, a, b in zip(names, out["dev"], out["ref"])}


def check_chunk(device, quick):
    return _verdict(_attention_parity(device, "chunk", 200 if quick else 1000))


def check_fla(device, quick):
    why = fla_status(device)
    if why:
        return ("n/a" if device.type != "cuda" else "FAIL"), why
    return _verdict(_attention_parity(device, "fla", 200 if quick else 1000), tol=2e-3)


def check_decode_step(device, quick):
    """Token by token with the fused step (in place) vs the chunked scan, fp64 oracle."""
    T = 50 if quick else 300
    f, g, v, (q, kk, axes) = _inputs(T)
    o_ref, st_ref = aleph_attention_chunk(f, g, v, chunk=64)
    state, outs = None, []
    with torch.no_grad():
        for t in range(T):
            args = (q[:, :, t], kk[:, :, t], v[:, :, t], axes)
            o, state = aleph_decode_step(
                *(x.to(device, torch.float32) for x in args), TAU, state, inplace=True
            )
            outs.append(o)
    return _verdict({"o": _rel(torch.stack(outs, 2), o_ref), "M": _rel(state.M, st_ref.M)})


def check_bank_lse(device, quick):
    gen = torch.Generator().manual_seed(2)
    R, N, k = (32, 3000, 16) if quick else (256, 65536, 32)
    r, e = rownorm(torch.randn(R, k, generator=gen)), rownorm(torch.randn(N, k, generator=gen))
    s, b = torch.rand(R, generator=gen) * 10, torch.randn(N, generator=gen)
    res = {}
    for name, impl, dev, dt in (
        ("ref", "naive", "cpu", torch.float64),
        ("dev", "tiled", device, torch.float32),
    ):
        leaves = [x.detach().to(dev, dt).clone().requires_grad_() for x in (r, e, s, b)]
        out = bank_logsumexp(*leaves, tile=1024, impl=impl)
        out.sum().backward()
        res[name] = [out, *(x.grad for x in leaves)]
    names = ("lse", "grad r", "grad e", "grad scale", "grad bias")
    return _verdict({n: _rel(a, b) for n, a, b in zip(names, res["dev"], res["ref"])})


def _tiny_model(device, head="pmix"):
    import numpy as np

    from geolip.aleph.bank import bank_from_bytes
    from geolip.aleph.model import AlephLM
    from geolip.aleph.presets import tiny, with_head

    run = with_head(tiny(), head)
    text = np.frombuffer(b"the cat sat on the mat while the dog lay on the log. " * 200, np.uint8)
    torch.manual_seed(0)
    model = AlephLM(run.model, bank_from_bytes(text, 256)).to(device)
    gen = torch.Generator().manual_seed(3)
    n = run.model.seq_trigrams * run.model.n_segments + 1
    starts = torch.randint(0, len(text) - 3 * n - 3, (4,), generator=gen).tolist()
    idx = torch.tensor(starts)[:, None, None] + 3 * torch.arange(n)[None, :, None] + torch.arange(3)
    return model, run.train, torch.from_numpy(text.copy())[idx].long()  # window [4, n, 3]


def check_decode_full_pass(device, quick):
    model, _, window = _tiny_model(device)
    ids = window[:, :-1].to(device)
    with torch.no_grad():
        h_full = model.eval().backbone(ids)[0]
        state, hs = None, []
        for t in range(ids.shape[1]):
            h, state = model.step(ids[:, t], t, state, inplace=True)
            hs.append(h)
    return _verdict({"h": _rel(torch.stack(hs, 1), h_full)}, tol=1e-4)


def check_bf16_step(device, quick):
    """One training step's loss under bf16 autocast vs fp32, from the same weights."""
    from geolip.aleph.train import build_optimizer, build_scheduler, train_step

    losses = {}
    for amp in ("off", "bf16"):
        model, tcfg, window = _tiny_model(device)
        tcfg = dataclasses.replace(tcfg, amp=amp)
        opt = build_optimizer(model, tcfg)
        m = train_step(model, opt, build_scheduler(opt, tcfg), [window], tcfg)
        losses[amp] = m["loss_main"]
    err = abs(losses["bf16"] - losses["off"]) / abs(losses["off"])
    ok = err < 2e-2 and all(v == v for v in losses.values())
    return (
        "PASS" if ok else "FAIL"
    ), f"loss fp32 {losses['off']:.4f} bf16 {losses['bf16']:.4f} ({err:.1e})"


def check_compile(device, quick):
    from geolip.aleph.train.compiled import compile_for_training

    model, tcfg, window = _tiny_model(device)
    backend = "eager" if quick else "inductor"  # quick: dynamo's tracing only
    _, report = compile_for_training(model, window, tcfg, backend=backend)
    return ("PASS" if report.used else "FAIL"), f"{backend}: {report.line()}"


CHECKS = [
    ("chunk scan = oracle", check_chunk),
    ("attn_impl=fla = oracle", check_fla),
    ("fused decode step = scan", check_decode_step),
    ("bank LSE tiled = naive", check_bank_lse),
    ("decode = full pass", check_decode_full_pass),
    ("bf16 training step", check_bf16_step),
    ("train.compile parity", check_compile),
]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeats: int) -> float:
    fn()  # warm-up (and autotuning)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def _layer_case(impl: str, T: int, device):
    gen = torch.Generator(device=device).manual_seed(0)
    if impl == "sdpa":
        q, k, v = (
            torch.randn(1, H, T, DH, device=device, generator=gen, requires_grad=True)
            for _ in range(3)
        )
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    x = torch.randn(1, H, T, 2, D, device=device, generator=gen)
    v = torch.randn(1, H, T, DH, device=device, generator=gen, requires_grad=True)
    A = torch.randn(K, D, device=device, generator=gen, requires_grad=True)

    def run():
        axes = rownorm(A)
        f, g = oriented_address(x[..., 0, :], axes, TAU), oriented_address(x[..., 1, :], axes, TAU)
        aleph_attention(f, g, v, impl=impl, chunk=64 if T <= 2048 else 128)[0].sum().backward()

    return run


def attention_table(device, quick) -> list[dict]:
    lengths = (256, 512) if quick else (2048, 8192, 32768, 65536)
    impls = ["chunk", "sdpa"] + (["fla"] if fla_status(device) == "" else [])
    rows = []
    for T in lengths:
        row = {"T": T}
        for impl in impls:
            try:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                row[f"{impl} ms"] = 1e3 * _time(
                    _layer_case(impl, T, device), device, 1 if quick else 5
                )
                if device.type == "cuda":
                    row[f"{impl} MB"] = torch.cuda.max_memory_allocated(device) / 2**20
            except torch.cuda.OutOfMemoryError:
                row[f"{impl} ms"] = "OOM"
        for impl in impls[:1] + impls[2:]:
            if isinstance(row.get(f"{impl} ms"), float) and isinstance(row.get("sdpa ms"), float):
                row[f"sdpa/{impl}"] = row["sdpa ms"] / row[f"{impl} ms"]
        rows.append(row)
        print(f"  attention T={T}: {row}", flush=True)
    return rows


def decode_table(device, quick, layers: int = 8) -> list[dict]:
    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    steps = 5 if quick else 50
    for T in (512, 2048) if quick else (2048, 8192, 32768, 65536):
        states = [
            AttentionState(
                torch.rand(1, H, 2 * K, DH, device=device),
                torch.rand(1, H, 2 * K, device=device) * T,
            )
            for _ in range(layers)
        ]
        W = [torch.randn(2, H * D, 512, device=device, generator=gen) for _ in range(layers)]
        A = rownorm(torch.randn(K, D, device=device, generator=gen))
        x, v = torch.randn(1, 512, device=device), torch.randn(1, H, DH, device=device)
        cache = [torch.randn(2, 1, H, T + 1, DH, device=device) for _ in range(layers)]
        qd = torch.randn(1, H, 1, DH, device=device)

        def aleph(W=W, A=A, x=x, v=v, states=states):
            for i in range(layers):
                q, k = (x @ W[i][0].T).view(1, H, D), (x @ W[i][1].T).view(1, H, D)
                states[i] = aleph_decode_step(q, k, v, A, TAU, states[i], inplace=True)[1]

        def sdpa(cache=cache, qd=qd):
            for c in cache:
                F.scaled_dot_product_attention(qd, c[0], c[1])

        with torch.no_grad():
            row = {
                "T": T,
                "aleph ms/token": 1e3
                * statistics.median(_time(aleph, device, 1) for _ in range(steps)),
            }
            row["sdpa ms/token"] = 1e3 * statistics.median(
                _time(sdpa, device, 1) for _ in range(steps)
            )
        rows.append(row)
        print(f"  decode T={T}: {row}", flush=True)
    return rows


def training_table(device, quick) -> list[dict]:
    import numpy as np

    from geolip.aleph.bank import bank_from_bytes
    from geolip.aleph.model import AlephLM
    from geolip.aleph.presets import calib23m, tiny
    from geolip.aleph.train import build_optimizer, build_scheduler, train_step

    run = tiny() if quick else calib23m()
    gen = np.random.default_rng(0)
    text = gen.integers(97, 123, size=2_000_000, dtype=np.uint8)
    model = AlephLM(run.model, bank_from_bytes(text, run.train.bank_size)).to(device)
    batch = 4 if quick else 8
    rows = []
    for amp in ("off",) if device.type != "cuda" else ("bf16",):
        tcfg = dataclasses.replace(run.train, amp=amp, batch_size=batch)
        opt = build_optimizer(model, tcfg)
        sched = build_scheduler(opt, tcfg)
        n = run.model.seq_trigrams * run.model.n_segments + 1
        window = torch.from_numpy(text[: batch * n * 3].reshape(batch, n, 3).copy()).long()
        step = functools.partial(train_step, model, opt, sched, [window], tcfg)
        seconds = _time(step, device, 2 if quick else 5)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        rows.append(
            {
                "preset": run.preset,
                "amp": amp,
                "batch": batch,
                "bytes/s": 3 * batch * (n - 1) / seconds,
                "peak MB": peak,
            }
        )
        print(f"  training: {rows[-1]}", flush=True)
    return rows


def benchmark(device, quick) -> dict:
    return {
        "attention fwd+bwd, one 23M-tier layer": attention_table(device, quick),
        "decode, 8 layers": decode_table(device, quick),
        "training": training_table(device, quick),
    }
