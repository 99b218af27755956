"""Gate × bank + byte tail: a proper distribution over all 256³ trigrams.

``blend`` (default): ``P(x) = g·q(idx x)·[x∈Bk] + (1−g)·P_tail(x)``; every trigram keeps mass.
``switch``: disjoint supports, ``P(x) = g·q(j*)`` in bank, ``(1−g)·P_tail(x)/(1−M)`` outside, with
``M = Σ_j P_tail(Bk_j)``; its NLL splits exactly into gate BCE + in-bank CE + out-of-bank tail CE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from geolip.numerics import at_least_fp32


class ByteTail(nn.Module):
    """Three independent byte softmaxes ``ℓ⁽ⁱ⁾ = W⁽ⁱ⁾h + c⁽ⁱ⁾``; alone, this is the byte head."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Linear(d_model, 256) for _ in range(3))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: [..., d] -> byte log-probs [..., 3, 256] (fp32)."""
        return torch.stack(
            [torch.log_softmax(at_least_fp32(p(h)), dim=-1) for p in self.proj], dim=-2
        )


def tail_log_prob(tail_logp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log P_tail(x) = Σ_i log p_i(x_i). tail_logp: [..., 3, 256]; x: [..., 3] -> [...]."""
    return tail_logp.gather(-1, x.long().unsqueeze(-1)).squeeze(-1).sum(-1)


def _mass_tile(p1, p2, p3, tri):
    return (p1[:, tri[:, 0]] * p2[:, tri[:, 1]] * p3[:, tri[:, 2]]).sum(-1)


def tail_bank_mass(tail_logp: torch.Tensor, trigrams: torch.Tensor, tile: int) -> torch.Tensor:
    """``M = Σ_j P_tail(Bk_j)``: tail mass on the bank. tail_logp: [..., 3, 256] -> [...].

    O(rows·N): tiles over the bank, each recomputed in backward to keep memory O(rows·tile).
    """
    lead = tail_logp.shape[:-2]
    p = tail_logp.reshape(-1, 3, 256).exp()
    p1, p2, p3 = p[:, 0], p[:, 1], p[:, 2]
    total = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
    for j0 in range(0, trigrams.shape[0], tile):
        tri = trigrams[j0 : j0 + tile]
        if p.requires_grad:
            total = total + checkpoint(_mass_tile, p1, p2, p3, tri, use_reentrant=False)
        else:
            total = total + _mass_tile(p1, p2, p3, tri)
    return total.view(lead)


def mixture_nll(
    mixture: str,
    gate_logit: torch.Tensor,
    log_q: torch.Tensor,
    in_bank: torch.Tensor,
    log_tail: torch.Tensor,
    log_tail_outside: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-position trigram NLL in nats. All inputs [...]; ``log_q`` is ignored where not in bank.

    ``log_tail_outside`` (switch only) is ``log(1 − M)``.
    """
    lg_in, lg_out = F.logsigmoid(gate_logit), F.logsigmoid(-gate_logit)
    if mixture == "blend":
        both = torch.logsumexp(torch.stack([lg_in + log_q, lg_out + log_tail]), dim=0)
        return -torch.where(in_bank, both, lg_out + log_tail)
    if mixture == "switch":
        outside = lg_out + log_tail - log_tail_outside
        return -torch.where(in_bank, lg_in + log_q, outside)
    raise ValueError(f"mixture must be 'blend' or 'switch', got {mixture!r}")


def switch_log_outside(tail_logp: torch.Tensor, trigrams: torch.Tensor, tile: int) -> torch.Tensor:
    """``log(1 − M)`` with M clamped below 1 (spec §5.2)."""
    M = tail_bank_mass(tail_logp, trigrams, tile)
    return torch.log1p(-M.clamp(max=1 - 1e-6))
