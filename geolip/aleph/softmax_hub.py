"""The softmax twin's attention: standard causal softmax attention where AlephLM routes through
the aleph (``model.attn=softmax``), the control the card's lineage compares with at equal size.

Same widths, heads, MLP and heads on top; queries and keys are ordinary ``d_h``-dim projections
(no codebook, no address), so the hubs read nothing of the aleph and a bank head is the only
consumer of the codebook. The past is a key/value cache that grows with the context (the cost
the aleph's constant ``(M, z)`` state avoids).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class KVState(NamedTuple):
    """The keys and values written so far: ``k, v: [B, H, S, d_h]`` (S grows by one per position)."""

    k: torch.Tensor
    v: torch.Tensor

    def detach(self) -> KVState:
        return KVState(self.k.detach(), self.v.detach())


class SoftmaxAttention(nn.Module):
    """Multi-head causal softmax attention (PyTorch SDPA), with the hub's interface."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.W_q = nn.Linear(d_model, d_model, bias=False)
        self.W_k = nn.Linear(d_model, d_model, bias=False)
        self.W_v = nn.Linear(d_model, d_model, bias=False)
        self.W_o = nn.Linear(d_model, d_model, bias=True)

    def _heads(self, lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return lin(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, axes: torch.Tensor | None = None, state: KVState | None = None
    ) -> tuple[torch.Tensor, KVState, None]:
        """x: [B, T, d] (``axes`` unused) -> (y: [B, T, d], the cache with these T positions
        appended, None: there are no key addresses)."""
        q, k, v = (self._heads(lin, x) for lin in (self.W_q, self.W_k, self.W_v))
        T = x.shape[1]
        if state is not None:
            k, v = torch.cat([state.k, k], dim=2), torch.cat([state.v, v], dim=2)
        S = k.shape[2]
        if S == T:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # queries are the last T of S positions: SDPA's is_causal aligns them top-left
            mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        B = x.shape[0]
        return self.W_o(o.transpose(1, 2).reshape(B, T, -1)), KVState(k, v), None

    def step(
        self,
        x: torch.Tensor,
        axes: torch.Tensor | None,
        state: KVState | None,
        inplace: bool = False,
    ) -> tuple[torch.Tensor, KVState]:
        """One decode position. x: [B, d] -> (y: [B, d], the cache one position longer).

        ``inplace`` is the aleph hub's option; a growing cache is always a new tensor here."""
        y, state, _ = self.forward(x.unsqueeze(1), axes, state)
        return y[:, 0], state
