"""Auxiliary losses on the codebook and hubs (each off by default, spec §7.2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from geolip.numerics import at_least_fp32


def diversity_loss(keys: torch.Tensor) -> torch.Tensor:
    """``log 2K − H(ū)`` with ``ū`` the mean key address over batch, heads and positions.

    keys: [B, H, T, 2K] -> scalar; 0 at uniform usage, log 2K with all mass on one half-axis.
    """
    u = at_least_fp32(keys).mean(dim=(0, 1, 2))
    entropy = -(u * torch.log(u.clamp_min(1e-30))).sum()
    return math.log(keys.shape[-1]) - entropy


def write_head_loss(keys: torch.Tensor, readouts: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Predict the *current* input trigram's bytes from the head-mean key address.

    keys: [B, H, T, 2K]; readouts: [3, 256, 2K] (index-bound to axes); ids: [B, T, 3] -> scalar.
    Forces what is written into memory to identify the content.
    """
    gbar = at_least_fp32(keys).mean(dim=1)  # [B, T, 2K]
    logits = torch.einsum("btk,ivk->btiv", gbar, at_least_fp32(readouts))
    return F.cross_entropy(logits.reshape(-1, 256), ids.reshape(-1).long())
