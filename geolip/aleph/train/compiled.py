"""``train.compile``: the training forward/backward through ``torch.compile``, trusted only after
it has reproduced eager mode on one real batch.

A compiled graph can go wrong quietly (a miscompiled fusion, a backend bug on one platform).
Before the first optimisation step the compiled module and the eager module run the same
segment from the same weights; the task loss and every parameter's gradient must agree within
``PARITY`` (looser under bf16/fp16 autocast, whose rounding differs between fused and unfused
kernels). Only then is the compiled module used; otherwise, or when compiling fails, training
goes on eagerly and the reason is reported in one line. Parameters are shared, so the optimizer,
checkpoints and evaluation keep using the plain module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from geolip.aleph.train.step import (
    autocast_context,
    autocast_dtype,
    model_config,
    split_segments,
)

# (rtol, atol) on the loss and on every gradient, relative to that gradient's largest entry.
PARITY = {"fp32": (1e-4, 1e-5), "half": (5e-2, 5e-3)}


@dataclass(frozen=True)
class CompileReport:
    """What ``compile_for_training`` decided: ``used`` (the compiled module trains), the
    seconds spent compiling and checking, the worst relative gradient error, and why not."""

    used: bool
    seconds: float
    worst: float | None = None
    reason: str = ""

    def line(self) -> str:
        if self.used:
            return (
                f"train.compile: compiled and checked against eager in {self.seconds:.0f}s "
                f"(worst gradient error {self.worst:.1e})"
            )
        return f"train.compile: training eagerly: {self.reason}"


def compile_for_training(module, window: torch.Tensor, train_cfg, *, backend: str = "inductor"):
    """(module to train with, CompileReport). module: the model or its DDP wrapper;
    window: one micro-batch [B, T·n_seg + 1, 3] (its first two segments are run)."""
    t0 = time.perf_counter()
    try:
        compiled = torch.compile(module, backend=backend)
        worst = _check_parity(module, compiled, window, train_cfg)
    except ParityError as exc:
        return module, CompileReport(False, time.perf_counter() - t0, reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - any compiler failure means: train eagerly
        why = f"torch.compile failed ({_root_cause(exc)})"
        return module, CompileReport(False, time.perf_counter() - t0, reason=why)
    return compiled, CompileReport(True, time.perf_counter() - t0, worst=worst)


class ParityError(RuntimeError):
    """The compiled module did not reproduce the eager one."""


def _check_parity(eager, compiled, window: torch.Tensor, train_cfg) -> float:
    """Loss and gradients of one segment, eager vs compiled; the worst relative gradient error.

    Gradients are cleared afterwards: the check leaves no trace in the first step."""
    cfg = model_config(eager)
    params = [p for p in eager.parameters() if p.requires_grad]
    device = params[0].device
    # Two segments where the run streams: the second carries the hub state, as training does.
    segments = list(split_segments(window.to(device), cfg.seq_trigrams, cfg.n_segments))[:2]
    half = autocast_dtype(device, train_cfg.amp) is not None
    rtol, atol = PARITY["half" if half else "fp32"]
    results = []
    for module in (eager, compiled):
        for p in params:
            p.grad = None
        state, total = None, 0.0
        for ids, tgt in segments:
            with autocast_context(device, train_cfg.amp):
                out = module(ids, tgt, state)
            out.loss.backward()
            state, total = [s.detach() for s in out.state], total + out.loss.detach().float()
        results.append((total, [_grad(p) for p in params]))
    for p in params:
        p.grad = None
    (l_eager, g_eager), (l_comp, g_comp) = results
    if not torch.allclose(l_comp, l_eager, rtol=rtol, atol=atol):
        raise ParityError(f"compiled loss {float(l_comp):.6g} != eager {float(l_eager):.6g}")
    worst = 0.0
    for p, a, b in zip(params, g_comp, g_eager):
        scale = b.abs().max().clamp_min(1e-12)
        err = float((a - b).abs().max() / scale)
        if err > rtol and float((a - b).abs().max()) > atol:
            raise ParityError(
                f"compiled gradient off by {err:.1e} (relative) on a {tuple(p.shape)} parameter"
            )
        worst = max(worst, err)
    return worst


def _grad(p: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(p, dtype=torch.float32) if p.grad is None else p.grad.detach().float()


def _root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause (dynamo wraps a backend's own error)."""
    while (inner := getattr(exc, "inner_exception", None) or exc.__cause__) is not None:
        exc = inner
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"
