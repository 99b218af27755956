"""Spread construction (aleph.md §11.2, §15 T15) and the random control codebook."""

from __future__ import annotations

import math
import time

import pytest
import torch

from geolip.geometry.gauge import StatuteGauge, angle_spread
from geolip.geometry.sphere import rownorm, sign_canonicalize
from geolip.geometry.spread import (
    _riemannian_grad,
    min_angle_deg,
    random_codebook,
    smooth_max_energy,
    spread_codebook,
)


def test_T15_spread_theta_min_at_least_25deg() -> None:
    A = spread_codebook()
    assert A.shape == (64, 4) and A.dtype == torch.float32
    torch.testing.assert_close(A.norm(dim=-1), torch.ones(64))
    assert torch.equal(sign_canonicalize(A), A)
    reading = StatuteGauge()(A)
    assert reading.theta_min_deg >= 25.0
    assert reading.theta_min_deg > 2.5 * angle_spread(random_codebook(64, 4, 0))[0]
    assert reading.erank > 3.99 and not reading.merge
    assert reading.dev > 0.0


def test_spread_is_cached_and_returns_a_clone() -> None:
    A = spread_codebook(16, 3, iters=400, restarts=2)
    A.zero_()
    t0 = time.perf_counter()
    B = spread_codebook(16, 3, iters=400, restarts=2)
    assert time.perf_counter() - t0 < 0.05
    assert B.abs().sum() > 0
    C = spread_codebook(16, 3, iters=400, restarts=2, seed=1)
    assert not torch.equal(B, C)


def test_spread_reaches_the_planar_optimum() -> None:
    # K lines in R^2 pack optimally at 180/K degrees apart.
    A = spread_codebook(8, 2, iters=1500, restarts=4)
    assert float(min_angle_deg(A)) == pytest.approx(180 / 8, abs=0.1)


def test_smooth_max_energy_brackets_the_max() -> None:
    A = random_codebook(20, 4, seed=9).double()
    c = (A @ A.T).abs().fill_diagonal_(0).max()
    for s in (10.0, 100.0):
        e = float(smooth_max_energy(A, s))
        assert float(c) <= e <= float(c) + math.log(20 * 19) / s


def test_riemannian_grad_matches_autograd() -> None:
    A = random_codebook(12, 4, seed=4).double().unsqueeze(0)
    leaf = A.clone().requires_grad_(True)
    smooth_max_energy(leaf, 30.0).sum().backward()
    g = leaf.grad
    tangent = g - (g * A).sum(-1, keepdim=True) * A
    torch.testing.assert_close(_riemannian_grad(A, 30.0), tangent, atol=1e-12, rtol=1e-9)


def test_random_codebook_is_seeded_rownorm_randn() -> None:
    A = random_codebook(64, 4, seed=3)
    gen = torch.Generator().manual_seed(3)
    torch.testing.assert_close(A, rownorm(torch.randn(64, 4, generator=gen)))
    assert torch.equal(A, random_codebook(64, 4, seed=3))
    assert not torch.equal(A, random_codebook(64, 4, seed=4))
