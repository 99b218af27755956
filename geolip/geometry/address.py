"""The aleph address: a signed antipodal soft assignment of a direction to K codebook axes.

An *aleph* is a codebook of K unit directions ``a_1..a_K`` in D dimensions. The address of a direction
x̂ reads its cosine to every axis, ``u = x̂Aᵀ/τ``, and spreads unit mass over the 2K *oriented*
half-axes ``[+A; −A]``: ``p± = exp(±u − m)/Z'`` with ``m = max|u|``. Because ``p±`` are strictly
positive and sum to one, ``φ(x) = [p⁺; p⁻]`` is a valid feature map for linear attention, and
``s = p⁺ − p⁻ = sinh(u)/Σcosh(u)`` is the signed address. The max-shift makes every τ safe: one
exponent is exactly e⁰, so ``Z' ∈ [1, 2K]``. Everything inside is fp32 (or fp64) even under autocast.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from geolip.geometry.sphere import rownorm


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # The address stays fp32 inside even when the model runs in bf16/fp16: the exp of ±u/τ with
    # τ=0.1 spans e^±10, which half precision resolves too coarsely for routing.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def address_logits(x: torch.Tensor, axes: torch.Tensor, tau: float) -> torch.Tensor:
    """Scaled cosines ``u = rownorm(x) · axesᵀ / τ``.

    x: [..., D] (any norm, normalised here); axes: [K, D] unit rows -> u: [..., K] in [−1/τ, 1/τ].
    """
    return _scaled_cosines(x, axes, tau)


def _scaled_cosines(x: torch.Tensor, rows: torch.Tensor, tau: float) -> torch.Tensor:
    """``rownorm(x) · rowsᵀ / τ`` with 1/τ applied to the [R, D] ``rows``, not to every
    position's logits (``address_logits`` and ``oriented_logits`` share it, so p± and φ see the
    same u to the last bit). x: [..., D] -> [..., R] (fp32/fp64, autocast off)."""
    dt = _compute_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        return rownorm(x.to(dt)) @ (rows.to(dt).transpose(-1, -2) * (1.0 / tau))


class AlephAddress(NamedTuple):
    """The two hemispheres of an address: ``p_plus, p_minus: [..., K]``, jointly on Δ^{2K}."""

    p_plus: torch.Tensor
    p_minus: torch.Tensor

    @property
    def phi(self) -> torch.Tensor:
        """Oriented address ``[p⁺; p⁻]``: [..., 2K]."""
        return torch.cat([self.p_plus, self.p_minus], dim=-1)

    @property
    def signed(self) -> torch.Tensor:
        """Signed address ``s = p⁺ − p⁻``: [..., K]."""
        return self.p_plus - self.p_minus


def aleph_address(x: torch.Tensor, axes: torch.Tensor, tau: float) -> AlephAddress:
    """Both hemispheres of the address of x. x: [..., D]; axes: [K, D] -> two [..., K] tensors."""
    u = address_logits(x, axes, tau)
    m = u.abs().amax(dim=-1, keepdim=True)
    e_plus, e_minus = torch.exp(u - m), torch.exp(-u - m)
    z = (e_plus + e_minus).sum(dim=-1, keepdim=True)
    return AlephAddress(e_plus / z, e_minus / z)


def oriented_logits(x: torch.Tensor, axes: torch.Tensor, tau: float) -> torch.Tensor:
    """``[u; −u]`` in one matmul against the doubled, pre-scaled codebook ``[A; −A]ᵀ/τ``.

    x: [..., D]; axes: [K, D] -> [..., 2K]. Same values as ``cat([u, −u])/τ`` up to rounding,
    but the negation, the concatenation and the 1/τ act on the [2K, D] codebook, not on every
    position's logits: at T = 512 that is most of the address's cost (forward and backward).
    """
    return _scaled_cosines(x, torch.cat([axes, -axes], dim=0), tau)


def oriented_address(x: torch.Tensor, axes: torch.Tensor, tau: float) -> torch.Tensor:
    """φ(x) = [p⁺; p⁻] ∈ Δ^{2K}. x: [..., D] -> [..., 2K] (fp32/fp64)."""
    # Softmax over [u; −u] is the same thing; torch's softmax subtracts the same max m.
    return torch.softmax(oriented_logits(x, axes, tau), dim=-1)


def log_oriented_address(x: torch.Tensor, axes: torch.Tensor, tau: float) -> torch.Tensor:
    """log φ(x), exact at any τ (no log of an underflowed probability). -> [..., 2K]."""
    return torch.log_softmax(oriented_logits(x, axes, tau), dim=-1)


def signed_address(x: torch.Tensor, axes: torch.Tensor, tau: float) -> torch.Tensor:
    """s(x) = p⁺ − p⁻ = sinh(u)/Σcosh(u). x: [..., D] -> [..., K]."""
    return aleph_address(x, axes, tau).signed
