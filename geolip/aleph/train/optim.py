"""Pure Adam (never AdamW; weight decay 0) with the codebook in its own param group, and a cosine
schedule to ``lr_final_frac`` of the peak."""

from __future__ import annotations

import math

import torch


def codebook_params(model) -> list[torch.nn.Parameter]:
    """Trainable codebook tables (frozen arms hold buffers, which never reach the optimiser)."""
    books = list(model.codebooks)
    return [b.A_raw for b in books if isinstance(b.A_raw, torch.nn.Parameter)]


def build_optimizer(model, train_cfg) -> torch.optim.Adam:
    """Adam with groups ``main`` and ``codebook`` (lr × slowlane_mult under the slowlane arm)."""
    cb = codebook_params(model)
    cb_ids = {id(p) for p in cb}
    main = [p for p in model.parameters() if p.requires_grad and id(p) not in cb_ids]
    book = model.cfg.codebook
    mult = book.slowlane_mult if book.preservation == "slowlane" else 1.0
    groups = [{"params": main, "name": "main", "lr_mult": 1.0}]
    if cb:
        groups.append({"params": cb, "name": "codebook", "lr_mult": mult})
    for g in groups:
        g["lr"] = train_cfg.lr * g["lr_mult"]
    return torch.optim.Adam(groups, lr=train_cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)


def lr_factor(step: int, train_cfg) -> float:
    """Linear warm-up, then cosine from 1 to ``lr_final_frac`` at ``steps``."""
    if train_cfg.warmup_steps and step < train_cfg.warmup_steps:
        return (step + 1) / train_cfg.warmup_steps
    span = max(train_cfg.steps - train_cfg.warmup_steps, 1)
    progress = min(max(step - train_cfg.warmup_steps, 0) / span, 1.0)
    floor = train_cfg.lr_final_frac
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer, train_cfg) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train_cfg))
