"""Bank heads: each turns a hidden state into ``q_t ∈ Δ^N`` over the bank's candidate trigrams.

Which heads are *index-free* (read the codebook only through sums over axes, so permuting its rows
changes nothing — spec §10.2) and which are *index-bound*:

- ``KernelHead`` — index-bound: one emission key ``U_i`` per oriented axis. This is what makes the
  controller contrast's permute row large for the kernel head.
- ``PmixHead`` — does not touch the codebook at all (open loop).
- ``ApmixHead`` — index-free in ``through`` mode (query and candidates both addressed on the same
  codebook), index-bound in ``free`` mode (``V_c`` emits per-axis logits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from geolip.aleph.config import AlephConfig
from geolip.geometry.address import log_oriented_address
from geolip.geometry.sphere import rownorm
from geolip.numerics import at_least_fp32
from geolip.ops.bank_lse import bank_logsumexp


@dataclass
class BankContext:
    """What every head needs about the current bank: ``psi: [N, d_c]`` candidate features,
    ``prior: [N]`` (zeros when unused), ``axes: [K, D]`` of the head's codebook."""

    psi: torch.Tensor
    prior: torch.Tensor
    axes: torch.Tensor
    tile: int


class CandidateFeatures(nn.Module):
    """``ψ_j = LN(E¹[b₁] + E²[b₂] + E³[b₃])``: features from the bytes alone, so banks swap freely."""

    def __init__(self, d_cand: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(256, d_cand) for _ in range(3))
        self.ln = nn.LayerNorm(d_cand)

    def forward(self, trigrams: torch.Tensor) -> torch.Tensor:
        """trigrams: [N, 3] -> ψ: [N, d_c]."""
        return self.ln(sum(t(trigrams[:, i]) for i, t in enumerate(self.tables)))


class KernelHead(nn.Module):
    """π·κ log-kernel (the original aleph predictor), index-bound, rank ≤ 2K.

    ``π_t = φ(W_π h_t)`` is the context's oriented address; each oriented axis i emits over the bank
    with ``κ_i = softmax_j(⟨U_i, ψ_j⟩/τ_κ + ρ_j)``; ``q_t = π_t·κ``. Prediction error reaches the
    codebook through π, closing the loop.
    """

    def __init__(self, cfg: AlephConfig) -> None:
        super().__init__()
        d_cand = cfg.head.d_cand
        self.tau = cfg.tau
        self.W_pi = nn.Linear(cfg.d_model, cfg.D, bias=False)
        nn.init.orthogonal_(self.W_pi.weight)
        self.U = nn.Parameter(torch.randn(2 * cfg.K, d_cand) / math.sqrt(d_cand))
        self.log_tau_k = nn.Parameter(torch.tensor(math.log(cfg.head.kernel.tau_init)))

    def log_kappa(self, ctx: BankContext) -> torch.Tensor:
        """[2K, N] per-axis emission log-probabilities."""
        logits = (
            at_least_fp32(self.U) @ at_least_fp32(ctx.psi).T
        ) / self.log_tau_k.exp() + ctx.prior
        return torch.log_softmax(logits, dim=-1)

    def log_pi(self, h: torch.Tensor, ctx: BankContext) -> torch.Tensor:
        return log_oriented_address(self.W_pi(h), ctx.axes, self.tau)

    def target_log_q(self, h: torch.Tensor, j: torch.Tensor, ctx: BankContext) -> torch.Tensor:
        """h: [B, T, d]; j: [B, T] bank indices (≥ 0) -> log q_t(j): [B, T]."""
        return torch.logsumexp(self.log_pi(h, ctx) + self.log_kappa(ctx).T[j], dim=-1)

    def all_log_q(self, h: torch.Tensor, ctx: BankContext) -> torch.Tensor:
        """h: [M, d] -> log q: [M, N] (sampling and tests; memory M·2K·N)."""
        return torch.logsumexp(self.log_pi(h, ctx).unsqueeze(-1) + self.log_kappa(ctx), dim=-2)


class PointerHead(nn.Module):
    """A mixture of J pointer softmaxes over the bank: ``q = Σ_m w_m softmax_j(s_m⟨r_m, e_j⟩ + ρ_j)``.

    A mixture of softmaxes is not rank-bounded (the escape from the kernel head's 2K bottleneck).
    Subclasses say what the pointers ``r`` and candidate vectors ``e`` are.
    """

    def __init__(self, d_model: int, J: int, scale_init: float, scale_max: float) -> None:
        super().__init__()
        self.J, self.scale_max = J, scale_max
        self.G = nn.Linear(d_model, J)
        self.theta = nn.Parameter(torch.full((J,), math.log(scale_init)))

    def scale(self) -> torch.Tensor:
        return self.theta.exp().clamp(max=self.scale_max)

    def pointers(self, h: torch.Tensor, ctx: BankContext) -> torch.Tensor:  # [..., J, k]
        raise NotImplementedError

    def candidates(self, ctx: BankContext) -> torch.Tensor:  # [N, k]
        raise NotImplementedError

    def target_log_q(self, h: torch.Tensor, j: torch.Tensor, ctx: BankContext) -> torch.Tensor:
        """h: [B, T, d]; j: [B, T] -> log q_t(j): [B, T], normaliser streamed over bank tiles."""
        r, e = at_least_fp32(self.pointers(h, ctx)), at_least_fp32(self.candidates(ctx))
        s = self.scale()
        ej = e[j]  # [B, T, k]
        logit_j = s * torch.einsum("btmk,btk->btm", r, ej) + ctx.prior[j].unsqueeze(-1)
        rows = r.reshape(-1, r.shape[-1])
        scale_rows = s.expand(*r.shape[:-1]).reshape(-1)
        log_z = bank_logsumexp(rows, e, scale_rows, ctx.prior, tile=ctx.tile).view(r.shape[:-1])
        log_w = torch.log_softmax(at_least_fp32(self.G(h)), dim=-1)
        return torch.logsumexp(log_w + logit_j - log_z, dim=-1)

    def all_log_q(self, h: torch.Tensor, ctx: BankContext) -> torch.Tensor:
        """h: [M, d] -> log q: [M, N]."""
        r, e = at_least_fp32(self.pointers(h, ctx)), at_least_fp32(self.candidates(ctx))
        s = self.scale()
        logits = s.unsqueeze(-1) * torch.einsum("mjk,nk->mjn", r, e) + ctx.prior
        log_w = torch.log_softmax(at_least_fp32(self.G(h)), dim=-1)
        return torch.logsumexp(log_w.unsqueeze(-1) + torch.log_softmax(logits, dim=-1), dim=-2)


class PmixHead(PointerHead):
    """pmix: unit pointers ``rownorm(P_m h)`` against ``rownorm(E ψ_j)`` on an independent learned
    sphere. The codebook is not on the prediction path (open loop)."""

    def __init__(self, cfg: AlephConfig) -> None:
        own = cfg.head.pmix
        super().__init__(cfg.d_model, cfg.head.n_pointers, own.scale_init, own.scale_max)
        self.d_pointer = own.d_pointer
        self.P = nn.Linear(cfg.d_model, self.J * own.d_pointer, bias=False)
        self.E = nn.Linear(cfg.head.d_cand, own.d_pointer, bias=False)

    def pointers(self, h, ctx):
        return rownorm(self.P(h).unflatten(-1, (self.J, self.d_pointer)))

    def candidates(self, ctx):
        return rownorm(self.E(ctx.psi))


class ApmixHead(PointerHead):
    """apmix: pointers aimed in the Hellinger embedding of the aleph address.

    ``r_m = √φ(P^a_m h)`` and ``e_j = √κ_j`` lie on the positive orthant of S^{2K−1}, so ``⟨r, e⟩``
    is the Bhattacharyya affinity. ``through`` mode addresses candidates on the same codebook
    (``κ_j = φ(W_c ψ_j)``, index-free); ``free`` mode emits ``κ_j = softmax(V_c ψ_j)`` (index-bound).
    √ is taken as ``exp(½ log φ)`` so it stays differentiable when φ underflows.
    """

    def __init__(self, cfg: AlephConfig) -> None:
        own = cfg.head.apmix
        super().__init__(cfg.d_model, cfg.head.n_pointers, own.scale_init, own.scale_max)
        self.D, self.tau, self.mode = cfg.D, cfg.tau, own.mode
        self.P_a = nn.Linear(cfg.d_model, self.J * cfg.D, bias=False)
        nn.init.orthogonal_(self.P_a.weight)
        width = cfg.D if own.mode == "through" else 2 * cfg.K
        self.W_c = nn.Linear(cfg.head.d_cand, width, bias=False)

    def pointers(self, h, ctx):
        q = self.P_a(h).unflatten(-1, (self.J, self.D))
        return torch.exp(0.5 * log_oriented_address(q, ctx.axes, self.tau))

    def candidates(self, ctx):
        if self.mode == "through":
            return torch.exp(0.5 * log_oriented_address(self.W_c(ctx.psi), ctx.axes, self.tau))
        return torch.exp(0.5 * torch.log_softmax(at_least_fp32(self.W_c(ctx.psi)), dim=-1))


BANK_HEADS: dict[str, type[nn.Module]] = {
    "kernel": KernelHead,
    "pmix": PmixHead,
    "apmix": ApmixHead,
}


def build_head(cfg: AlephConfig) -> nn.Module:
    """The bank head named by ``cfg.head.kind``, built from the config it reads."""
    if cfg.head.kind not in BANK_HEADS:
        raise ValueError(f"no bank head for model.head.kind={cfg.head.kind!r}")
    return BANK_HEADS[cfg.head.kind](cfg)
