"""Bits per byte: ``bpb = Σ_t NLL_t / (3 ln 2 · n_scored)`` over scored trigrams (spec §8).

Three regimes, always named in the result: ``fixed`` (pre-materialised windows — the ablation
protocol), ``windowed`` (windows of T, each scoring only targets not yet scored, stride T/2) and
``streamed`` (one pass per stream with the hub state carried across segments). The first trigram of
each contiguous stream is context only; trailing ``len mod 3`` bytes are dropped and reported.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from geolip.aleph.data import trigram_view

LN2 = math.log(2.0)

Progress = Callable[[int], None]
"""Called with the number of items (windows, segments) scored after each batch: a bar's
``update``. This layer draws nothing itself."""


@dataclass(frozen=True)
class EvalResult:
    regime: str
    bpb: float
    nll_nats: float
    """Mean trigram NLL in nats."""
    bytes_scored: int
    bytes_unscored: int
    """Context-only bytes (first trigram of each stream) plus trailing bytes dropped by phase 0."""
    bytes_dropped: int
    """Trailing ``len mod 3`` bytes (and, for windowed/streamed splits, any remainder)."""

    def as_dict(self) -> dict:
        return asdict(self)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _in_eval_mode(fn):
    """Run ``fn(model, ...)`` under no_grad in eval mode; hand the model back in its own mode."""

    @functools.wraps(fn)
    @torch.no_grad()
    def wrapper(model, *args, **kwargs):
        was_training = model.training
        model.eval()
        try:
            return fn(model, *args, **kwargs)
        finally:
            model.train(was_training)

    return wrapper


@_in_eval_mode
def bpb_batches(model, batches: list[torch.Tensor], progress: Progress | None = None) -> EvalResult:
    """Score fixed windows ``[B, T+1, 3]`` (every target position). The ablation protocol.
    ``progress`` gets each batch's window count."""
    dev, total, count = _device(model), 0.0, 0
    for w in batches:
        w = w.to(dev)
        out = model(w[:, :-1], w[:, 1:])
        total += float(out.nll.double().sum())
        count += out.nll.numel()
        if progress is not None:
            progress(w.shape[0])
    nll = total / max(count, 1)
    unscored = 3 * sum(w.shape[0] for w in batches)  # each window's first trigram is context
    return EvalResult("fixed", nll / (3 * LN2), nll, 3 * count, unscored, 0)


@_in_eval_mode
def window_bpb(model, batches: list[torch.Tensor]) -> torch.Tensor:
    """Bits/byte of every window of ``batches`` (as :func:`bpb_batches`, one figure per window:
    what a paired standard error needs) -> ``[n_windows]`` float64 on the CPU."""
    dev, rows = _device(model), []
    for w in batches:
        w = w.to(dev)
        nll = model(w[:, :-1], w[:, 1:]).nll.double()  # [B, T] nats per target trigram
        rows.append(nll.mean(dim=-1).cpu() / (3 * LN2))
    return torch.cat(rows)


def _window_starts(n: int, T: int) -> list[int]:
    """The first trigram of each window of ``T <= n - 1`` trigrams over ``n``: stride T/2, the
    last window ending on the last target."""
    starts = list(range(0, n - 1 - T + 1, max(T // 2, 1)))
    if starts[-1] != n - 1 - T:
        starts.append(n - 1 - T)
    return starts


def window_count(n_bytes: int, T: int) -> int:
    """How many windows :func:`target_nll_windowed` scores on ``n_bytes`` bytes with windows of
    ``T`` trigrams (a progress bar's total); 0 where there is nothing to score."""
    n = n_bytes // 3
    return len(_window_starts(n, min(T, n - 1))) if n >= 2 else 0


@_in_eval_mode
def target_nll_windowed(
    model,
    arr: np.ndarray,
    T: int | None = None,
    batch: int = 8,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, int]:
    """``(nll [n - 1] float64, dropped bytes)``: the NLL in nats of every target trigram 1..n-1
    of ``arr``, in order, each scored once by independent windows of T trigrams with stride T/2
    (at least T/2 trigrams of context after the first window). ``progress`` gets each batch's
    window count (:func:`window_count` in all).

    One figure per target, so two models scored on the same bytes can be compared target by
    target (the paired standard error of a sweep's Δ, ``tune.stats``) whatever their T.
    """
    T = T or model.cfg.seq_trigrams
    tri, dropped = trigram_view(arr)
    n = tri.shape[0]
    if n < 2:
        raise ValueError("evaluation needs at least 2 trigrams (6 bytes) of held-out text")
    T = min(T, n - 1)
    starts = _window_starts(n, T)
    out = torch.empty(n - 1, dtype=torch.float64)
    dev, done = _device(model), 0  # done = targets [1..done] scored
    for b0 in range(0, len(starts), batch):
        group = starts[b0 : b0 + batch]
        idx = torch.tensor(group).unsqueeze(1) + torch.arange(T + 1).unsqueeze(0)
        w = tri[idx].to(dev)
        nll = model(w[:, :-1], w[:, 1:]).nll.double().cpu()
        for row, s in enumerate(group):
            first_new = max(done - s, 0)  # window position p predicts target s + p + 1
            out[s + first_new : s + T] = nll[row, first_new:]
            done = s + T
        if progress is not None:
            progress(len(group))
    return out, dropped


def bpb_windowed(
    model,
    arr: np.ndarray,
    T: int | None = None,
    batch: int = 8,
    progress: Progress | None = None,
) -> EvalResult:
    """The ``windowed`` regime: the mean of :func:`target_nll_windowed`."""
    return windowed_result(*target_nll_windowed(model, arr, T, batch, progress))


def windowed_result(nll: torch.Tensor, dropped: int) -> EvalResult:
    """The ``windowed`` figures of :func:`target_nll_windowed`'s ``(nll [n - 1], dropped)``."""
    mean = float(nll.sum()) / len(nll)
    return EvalResult("windowed", mean / (3 * LN2), mean, 3 * len(nll), 3 + dropped, dropped)


def segment_count(n_bytes: int, n_streams: int, T: int) -> int:
    """How many segments :func:`bpb_streamed` scores on ``n_bytes`` bytes in ``n_streams``
    streams with segments of ``T`` trigrams (a progress bar's total)."""
    per = n_bytes // 3 // n_streams
    return len(range(0, per - 1, T))


@_in_eval_mode
def bpb_streamed(
    model,
    arr: np.ndarray,
    n_streams: int = 1,
    T: int | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Carry the hub state across segments of T (positions reset per segment, as in training).

    The bytes are cut into ``n_streams`` contiguous streams scored in parallel; each stream's
    first trigram is context only. ``progress`` gets 1 per segment (:func:`segment_count` in
    all).
    """
    T = T or model.cfg.seq_trigrams
    tri, dropped = trigram_view(arr)
    per = tri.shape[0] // n_streams
    if per < 2:
        raise ValueError(f"{tri.shape[0]} trigrams are too few for {n_streams} streams")
    dropped_tri = tri.shape[0] - per * n_streams
    x = tri[: per * n_streams].view(n_streams, per, 3).to(_device(model))
    total, state = 0.0, None
    for s0 in range(0, per - 1, T):
        s1 = min(s0 + T, per - 1)
        out = model(x[:, s0:s1], x[:, s0 + 1 : s1 + 1], state)
        total += float(out.nll.double().sum())
        state = out.state
        if progress is not None:
            progress(1)
    scored = n_streams * (per - 1)
    mean = total / scored
    dropped_all = dropped + 3 * dropped_tri
    return EvalResult(
        "streamed", mean / (3 * LN2), mean, 3 * scored, 3 * n_streams + dropped_all, dropped_all
    )
