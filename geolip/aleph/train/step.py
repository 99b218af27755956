"""One optimisation step with TBPTT-1 streaming and gradient accumulation."""

from __future__ import annotations

import contextlib
import math

import torch


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf; the message names the step and the loss terms."""


def autocast_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The half precision ``amp`` trains in on ``device``: bf16 on CUDA under ``amp=auto``,
    None (fp32) on CPU, where fp32 is faster."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def autocast_context(device: torch.device, amp: str):
    """Autocast to :func:`autocast_dtype`, or nothing when that is None."""
    dtype = autocast_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def model_config(module):
    """The AlephConfig of a model, also through a DDP (or compiled) wrapper's ``module``."""
    return module.cfg if not hasattr(module, "module") else module.module.cfg


def split_segments(window: torch.Tensor, T: int, n_seg: int):
    """window: [B, T·n_seg + 1, 3] -> n_seg pairs (ids [B,T,3], targets [B,T,3])."""
    for s in range(n_seg):
        seg = window[:, s * T : (s + 1) * T + 1]
        yield seg[:, :-1], seg[:, 1:]


def train_step(
    model, optimizer, scheduler, micro_batches, train_cfg, step: int = 0, scaler=None, mean=None
):
    """Backward over ``accum`` micro-batches (each streamed in ``n_seg`` segments with the hub
    state detached between segments), clip at ``max(mean task loss, 1)``, Adam step, schedule step.

    micro_batches: list of [B, T·n_seg + 1, 3] uint8 windows. Returns float metrics.
    ``mean`` (data-parallel training) averages a float over all ranks: the clip threshold must be
    the global batch's task loss, or ranks holding the same gradients would clip them differently
    and their weights would drift apart.
    """
    cfg = model_config(model)
    device = next(model.parameters()).device
    model.train()
    optimizer.zero_grad(set_to_none=True)
    n_seg, scale = cfg.n_segments, 1.0 / (len(micro_batches) * cfg.n_segments)
    sums: dict[str, float] = {}
    for window in micro_batches:
        window, state = window.to(device, non_blocking=True), None
        for ids, tgt in split_segments(window, cfg.seq_trigrams, n_seg):
            with autocast_context(device, train_cfg.amp):
                out = model(ids, tgt, state)
            if not torch.isfinite(out.loss):
                terms = {k: float(v) for k, v in out.metrics.items()}
                raise NonFiniteLossError(
                    f"non-finite loss {float(out.loss.detach())} at step {step}: {terms}"
                )
            loss = out.loss * scale
            (scaler.scale(loss) if scaler else loss).backward()
            state = [s.detach() for s in out.state]
            for k, v in out.metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * scale
    if scaler:
        scaler.unscale_(optimizer)
    task = sums.get("loss_main", 0.0) if mean is None else mean(sums.get("loss_main", 0.0))
    clip = max(task, 1.0) if train_cfg.grad_clip == "task" else float(train_cfg.grad_clip)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    sums["bpb"] = task / (3 * math.log(2))
    sums["grad_norm"] = float(grad_norm)
    sums["lr"] = optimizer.param_groups[0]["lr"]
    return sums
