"""The single-process training loop: sample windows, step, log, evaluate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from geolip.aleph.data import sample_windows
from geolip.aleph.train.compiled import CompileReport, compile_for_training
from geolip.aleph.train.optim import build_optimizer, build_scheduler
from geolip.aleph.train.step import train_step


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    """One dict of float metrics per logged step (with ``step``, ``tokens_per_s`` and the
    training ``seconds`` so far)."""
    steps: int = 0
    seconds: float = 0.0
    compile: CompileReport | None = None
    """Under ``train.compile``: whether the compiled module trained, and why not."""


def train(
    model,
    train_bytes: np.ndarray,
    train_cfg,
    *,
    on_log: Callable[[dict], None] | None = None,
    max_seconds: float | None = None,
) -> TrainResult:
    """Train ``model`` in-process for ``train_cfg.steps`` steps (or until ``max_seconds``).

    Windows are drawn uniformly (seeded by ``train_cfg.seed``) from ``train_bytes`` (uint8 array).
    ``max_seconds`` and each log point's ``seconds`` count training time: compiling under
    ``train.compile`` included (equal wall-clock is equal), time spent in ``on_log`` not.
    """
    cfg = model.cfg
    torch.manual_seed(train_cfg.seed)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    opt = build_optimizer(model, train_cfg)
    sched = build_scheduler(opt, train_cfg)
    n_tri = cfg.seq_trigrams * cfg.n_segments
    result, t0, tokens, t_log = TrainResult(), time.perf_counter(), 0, time.perf_counter()
    module, paused = model, 0.0
    for step in range(train_cfg.steps):
        micro = [
            sample_windows(train_bytes, train_cfg.batch_size, n_tri, gen)
            for _ in range(train_cfg.accum)
        ]
        if step == 0 and train_cfg.compile:  # checked on the first step's own windows
            module, result.compile = compile_for_training(model, micro[0], train_cfg)
            t_log = time.perf_counter()  # compiling is not training throughput
        metrics = train_step(module, opt, sched, micro, train_cfg, step)
        tokens += train_cfg.batch_size * train_cfg.accum * n_tri
        result.steps = step + 1
        last = step + 1 == train_cfg.steps
        elapsed = time.perf_counter() - t0 - paused
        out_of_time = max_seconds is not None and elapsed > max_seconds
        if (step + 1) % train_cfg.log_every == 0 or last or out_of_time:
            now = time.perf_counter()
            metrics.update(
                step=step + 1, tokens_per_s=tokens / max(now - t_log, 1e-9), seconds=elapsed
            )
            result.history.append(metrics)
            if on_log:
                on_log(metrics)
            # What on_log spends (a held-out evaluation) is neither training time nor rate.
            paused += time.perf_counter() - now
            tokens, t_log = 0, time.perf_counter()
        if out_of_time:
            break
    result.seconds = time.perf_counter() - t0 - paused
    return result
