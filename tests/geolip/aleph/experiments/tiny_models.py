"""Tiny AlephLM factories shared by the experiment tests."""

from __future__ import annotations

import torch
from aleph_configs import tiny_cfg

from geolip.aleph.model import AlephLM


def make(head: str, bank, seed: int = 0, **changes) -> AlephLM:
    """A seeded tiny model with a named head and config overrides, in eval mode."""
    cfg = tiny_cfg(head, **changes)

    torch.manual_seed(seed)
    return AlephLM(cfg, bank).eval()


@torch.no_grad()
def nll(model, w: torch.Tensor) -> torch.Tensor:
    """Per-position NLL of windows ``w: [B, T+1, 3]``."""
    return model.eval()(w[:, :-1], w[:, 1:]).nll
