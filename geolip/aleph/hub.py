"""Hub attention: multi-head causal attention routed through the aleph codebook."""

from __future__ import annotations

import torch
from torch import nn

from geolip.aleph.softmax_hub import SoftmaxAttention
from geolip.geometry.address import oriented_address
from geolip.ops.aleph_attention import AttentionState, aleph_attention, aleph_decode_step


class AlephAttention(nn.Module):
    """Attention whose kernel is ``⟨φ(q̂), φ(k̂)⟩``: queries and keys are addressed on the codebook.

    Each head projects to a D-dim direction for queries and keys (untied, orthogonal init), both are
    addressed on the *same* codebook, and the affinity of two positions is the overlap of their
    oriented addresses. That overlap is an inner product of positive 2K-vectors, so attention is
    linear in length and the whole past fits in a constant state ``(M, z)`` per head: K sets the
    bandwidth (rank ≤ 2K), τ the hardness (bucket routing as τ→0, mean-pooling as τ→∞).
    """

    def __init__(self, d_model: int, n_heads: int, D: int, tau: float, chunk: int, impl: str):
        super().__init__()
        self.n_heads, self.D, self.tau, self.chunk, self.impl = n_heads, D, tau, chunk, impl
        self.head_dim = d_model // n_heads
        self.W_q = nn.Linear(d_model, n_heads * D, bias=False)
        self.W_k = nn.Linear(d_model, n_heads * D, bias=False)
        self.W_v = nn.Linear(d_model, d_model, bias=False)
        self.W_o = nn.Linear(d_model, d_model, bias=True)
        nn.init.orthogonal_(self.W_q.weight)
        nn.init.orthogonal_(self.W_k.weight)

    def project(self, x: torch.Tensor):
        """x: [B, T, d] -> raw directions q, k: [B, H, T, D] and values v: [B, H, T, d_h]."""
        B, T, _ = x.shape
        q = self.W_q(x).view(B, T, self.n_heads, self.D).transpose(1, 2)
        k = self.W_k(x).view(B, T, self.n_heads, self.D).transpose(1, 2)
        v = self.W_v(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def addresses(self, x: torch.Tensor, axes: torch.Tensor):
        """x: [B, T, d] -> f, g: [B, H, T, 2K] (fp32) and v: [B, H, T, d_h]."""
        q, k, v = self.project(x)
        return oriented_address(q, axes, self.tau), oriented_address(k, axes, self.tau), v

    def forward(
        self, x: torch.Tensor, axes: torch.Tensor, state: AttentionState | None = None
    ) -> tuple[torch.Tensor, AttentionState, torch.Tensor]:
        """x: [B, T, d]; axes: [K, D] -> (y: [B, T, d], new state, key addresses g: [B, H, T, 2K])."""
        f, g, v = self.addresses(x, axes)
        o, state = aleph_attention(f, g, v, state, impl=self.impl, chunk=self.chunk)
        B, _, T, _ = o.shape
        y = self.W_o(o.transpose(1, 2).reshape(B, T, -1).to(x.dtype))
        return y, state, g

    def step(
        self,
        x: torch.Tensor,
        axes: torch.Tensor,
        state: AttentionState | None,
        inplace: bool = False,
    ) -> tuple[torch.Tensor, AttentionState]:
        """One decode position. x: [B, d] -> (y: [B, d], new state); constant memory.

        The fused step (one address for q and k, one write, one read); ``inplace`` lets it
        update ``state`` where it lies (generation, under ``no_grad``).
        """
        q, k, v = (t[:, :, 0] for t in self.project(x.unsqueeze(1)))
        o, state = aleph_decode_step(q, k, v, axes, self.tau, state, inplace=inplace)
        return self.W_o(o.reshape(x.shape[0], -1).to(x.dtype)), state


class Block(nn.Module):
    """Pre-LN block: ``x += Hub(LN₁ x); x += MLP(LN₂ x)``. No dropout on the geometric path."""

    def __init__(self, cfg) -> None:
        super().__init__()
        d = cfg.d_model
        self.ln1 = nn.LayerNorm(d)
        if cfg.attn == "softmax":  # the twin (model.attn=softmax): no codebook in routing
            self.hub = SoftmaxAttention(d, cfg.n_heads)
        else:
            self.hub = AlephAttention(d, cfg.n_heads, cfg.D, cfg.tau, cfg.chunk, cfg.attn_impl)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, cfg.mlp_mult * d), nn.GELU(), nn.Linear(cfg.mlp_mult * d, d)
        )

    def forward(self, x, axes, state=None):
        y, state, g = self.hub(self.ln1(x), axes, state)
        x = x + y
        return x + self.mlp(self.ln2(x)), state, g

    def step(self, x, axes, state, inplace: bool = False):
        y, state = self.hub.step(self.ln1(x), axes, state, inplace)
        x = x + y
        return x + self.mlp(self.ln2(x)), state
