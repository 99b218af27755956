"""The aleph address (spec §1.1–§1.2, test T1 and identity I3)."""

from __future__ import annotations

import pytest
import torch

from geolip.geometry.address import (
    address_logits,
    aleph_address,
    log_oriented_address,
    oriented_address,
    signed_address,
)
from geolip.geometry.sphere import rownorm

K, D = 16, 4


def _inputs(norm: float, seed: int, dtype=torch.float32):
    """x: [64, D] rows of exactly ``norm`` (up to rounding); axes: [K, D] unit rows."""
    g = torch.Generator().manual_seed(seed)
    axes = rownorm(torch.randn(K, D, generator=g, dtype=torch.float64))
    x = rownorm(torch.randn(64, D, generator=g, dtype=torch.float64)) * norm
    return x.to(dtype), axes.to(dtype)


@pytest.mark.parametrize("tau", [1e-3, 0.1, 10.0])
@pytest.mark.parametrize("norm", [1e-8, 1.0, 1e8])
def test_T1_address_identities(tau, norm):
    x, axes = _inputs(norm, seed=int(tau * 1000) + int(norm > 1))
    addr = aleph_address(x, axes, tau)
    phi, log_phi = oriented_address(x, axes, tau), log_oriented_address(x, axes, tau)
    s = signed_address(x, axes, tau)
    for t in (addr.p_plus, addr.p_minus, phi, log_phi, s):
        assert t.dtype == torch.float32
        assert torch.isfinite(t).all(), f"non-finite address at tau={tau}, |x|={norm}"

    # u from our own fp64 computation: the address only sees the direction of x.
    u_ref = (rownorm(x.double()) @ axes.double().T) / tau
    u = address_logits(x, axes, tau)
    assert torch.allclose(u.double(), u_ref, rtol=0, atol=2e-6 / tau)

    # Z' and p± from u (fp64, max-shifted by hand), compared with the library.
    u64 = u.double()
    m = u64.abs().amax(-1, keepdim=True)
    e_plus, e_minus = torch.exp(u64 - m), torch.exp(-u64 - m)
    z = (e_plus + e_minus).sum(-1, keepdim=True)
    assert (z >= 1.0).all() and (z <= 2 * K).all()
    assert torch.allclose(addr.p_plus.double(), e_plus / z, rtol=0, atol=1e-6)
    assert torch.allclose(addr.p_minus.double(), e_minus / z, rtol=0, atol=1e-6)
    # The largest half-axis mass is exactly 1/Z' (one exponent is e⁰).
    assert torch.allclose(phi.double().amax(-1, keepdim=True), 1 / z, rtol=1e-6, atol=0)

    total = (addr.p_plus + addr.p_minus).sum(-1).double()
    assert (total - 1).abs().max() <= 1e-6
    assert ((phi.sum(-1).double() - 1).abs() <= 1e-6).all()
    assert torch.allclose(phi, addr.phi, rtol=1e-5, atol=1e-7)
    if tau >= 0.1:  # at τ=1e-3 the far half-axes underflow to 0 in fp32 (log φ stays exact)
        assert (addr.p_plus > 0).all() and (addr.p_minus > 0).all()
    else:
        assert (addr.p_plus >= 0).all() and (addr.p_minus >= 0).all()

    # s = p⁺ − p⁻ = sinh u / Σ cosh u; the literal form overflows fp64 for |u| > 710.
    if tau >= 0.1:
        s_ref = torch.sinh(u64) / torch.cosh(u64).sum(-1, keepdim=True)
    else:
        s_ref = (e_plus - e_minus) / z
    assert torch.allclose(s.double(), s_ref, rtol=0, atol=1e-6)
    assert (s.abs().sum(-1) <= 1 + 1e-6).all()

    # log φ equals log φ wherever φ did not underflow, and is finite everywhere.
    ok = phi > 1e-30
    assert torch.allclose(log_phi[ok], torch.log(phi[ok]), rtol=0, atol=1e-5)
    assert torch.allclose(log_phi.exp(), phi, rtol=0, atol=1e-7)


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_I3_orientation_ratio(tau):
    x, axes = _inputs(1.0, seed=7)
    u = address_logits(x, axes, tau)
    addr = aleph_address(x, axes, tau)
    ratio = addr.p_plus.double() / addr.p_minus.double()
    assert torch.allclose(ratio, torch.exp(2 * u.double()), rtol=1e-4, atol=0)
    log_phi = log_oriented_address(x, axes, tau).double()
    assert torch.allclose(log_phi[:, :K] - log_phi[:, K:], 2 * u.double(), rtol=0, atol=1e-5)
    # The mass on axis i is cosh(u_i)/Σ cosh(u_j).
    mass = (addr.p_plus + addr.p_minus).double()
    ref = torch.cosh(u.double()) / torch.cosh(u.double()).sum(-1, keepdim=True)
    assert torch.allclose(mass, ref, rtol=0, atol=1e-6)


def test_address_scale_invariant_in_fp64():
    x, axes = _inputs(1.0, seed=3, dtype=torch.float64)
    ref = oriented_address(x, axes, 0.1)
    for scale in (1e-8, 1e8):
        assert torch.allclose(oriented_address(x * scale, axes, 0.1), ref, rtol=0, atol=1e-12)


def test_address_stays_fp32_under_bf16_autocast():
    g = torch.Generator().manual_seed(11)
    axes = rownorm(torch.randn(K, D, generator=g))
    proj = torch.nn.Linear(8, D, bias=False)
    h = torch.randn(32, 8, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q = proj(h)
        assert q.dtype == torch.bfloat16  # the autocast really is on
        u = address_logits(q, axes, 0.1)
        phi = oriented_address(q, axes, 0.1)
        log_phi = log_oriented_address(q, axes, 0.1)
        addr = aleph_address(q, axes, 0.1)
    for t in (u, phi, log_phi, addr.p_plus, addr.p_minus):
        assert t.dtype == torch.float32
    # Same numbers as an fp32 computation on the (bf16-rounded) input: nothing ran in bf16.
    ref = oriented_address(q.float(), axes, 0.1)
    assert torch.allclose(phi, ref, rtol=0, atol=1e-7)
    assert torch.allclose(log_phi, log_oriented_address(q.float(), axes, 0.1), rtol=0, atol=1e-6)
