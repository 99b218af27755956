"""Omega and spectral-α attention ("the circles"), spec §6–§7.

Omega is a frame's column-norm spectrum; spectral-α attention lets the N patches of a sample
talk about their spectra, but only multiplicatively and within ±α_max per layer, so the shell
can modulate a mode's energy and never inject or flip one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def omega(frames: torch.Tensor) -> torch.Tensor:
    """The column-norm spectrum ω_j = ‖X[:, j]‖₂ of each frame. [B, N, V, D] -> [B, N, D].

    Squared, it is the diagonal of the frame's Gram XᵀX, so it ignores row signs and row order,
    and for unit rows Σ_j ω_j² = V.
    """
    return frames.norm(dim=-2)


class SpectralAlphaLayer(nn.Module):
    """One layer of spectral-α attention over a spectrum ``S: [B, N, D]`` (spec §7).

    Patches attend to each other (pre-LN multi-head softmax attention, no positions, no mask),
    and the attended signal becomes a gate Γ = tanh(·) ∈ (−1, 1) per mode. Each mode j owns a
    learnable strength α_j = α_max·σ(λ_j), and the output is ``S ⊙ (1 + α ⊙ Γ)``: at most a
    (1 ± α_j) rescaling of the raw S, so a positive S stays positive and a zero stays zero.
    Weights depend on D only, so the layer runs at any N and is permutation-equivariant in N.
    """

    def __init__(self, D: int, n_heads: int, max_alpha: float, alpha_init: float) -> None:
        super().__init__()
        if D % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide D={D}")
        self.D, self.n_heads, self.max_alpha = D, n_heads, max_alpha
        self.norm = nn.LayerNorm(D)
        self.qkv = nn.Linear(D, 3 * D)
        self.W_o = nn.Linear(D, D)
        self.alpha_logit = nn.Parameter(torch.full((D,), float(alpha_init)))

    def alpha(self) -> torch.Tensor:
        """α = α_max·σ(λ) per mode: [D], in [0, α_max]."""
        return self.max_alpha * torch.sigmoid(self.alpha_logit)

    def gate(
        self, S: torch.Tensor, return_attn: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Γ = tanh(W_o·MHA(LN S)) in (−1, 1): [B, N, D]; optionally the attention [B, h, N, N].

        ``return_attn`` computes the softmax explicitly (same maths as SDPA) so its rows can be
        measured, e.g. their entropy against log N (spec §14.4).
        """
        B, N, D = S.shape
        q, k, v = self.qkv(self.norm(S)).split(D, dim=-1)
        q, k, v = (t.view(B, N, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))
        attn = None
        if return_attn:
            attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // self.n_heads), dim=-1)
            o = attn @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v)
        return torch.tanh(self.W_o(o.transpose(1, 2).reshape(B, N, D))), attn

    def forward(
        self, S: torch.Tensor, return_attn: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """S: [B, N, D] -> (S_out = S ⊙ (1 + α ⊙ Γ): [B, N, D], attention [B, h, N, N] or None)."""
        gamma, attn = self.gate(S, return_attn)
        return S * (1 + self.alpha() * gamma), attn


class SpectralAlphaStack(nn.Module):
    """``n_layers`` spectral-α layers applied in turn: S⁽⁰⁾ = ω, S_att = S⁽ᴸ⁾.

    With zero layers (the ``use_spectral=False`` ablation) it is the identity. Bounds compose:
    S_att/ω ∈ [(1−α_max)^L, (1+α_max)^L].
    """

    def __init__(
        self, D: int, n_heads: int, n_layers: int, max_alpha: float, alpha_init: float
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SpectralAlphaLayer(D, n_heads, max_alpha, alpha_init) for _ in range(n_layers)
        )

    def forward(
        self, S: torch.Tensor, return_attn: bool = False
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """S: [B, N, D] -> (S_att: [B, N, D], per-layer attention [B, h, N, N] if asked, else [])."""
        attns = []
        for layer in self.layers:
            S, attn = layer(S, return_attn)
            if attn is not None:
                attns.append(attn)
        return S, attns

    def alphas(self) -> list[torch.Tensor]:
        """α per layer: a list of [D] tensors (with grad; detach to log)."""
        return [layer.alpha() for layer in self.layers]

    def mean_alpha(self) -> torch.Tensor:
        """Mean over layers of the mean over modes of α: a detached scalar (0 with no layers)."""
        if not self.layers:
            return torch.zeros(())
        return torch.stack([a.mean() for a in self.alphas()]).mean().detach()
