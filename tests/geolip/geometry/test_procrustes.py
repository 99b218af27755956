"""Procrustes alignment of frames (svae.md §15)."""

from __future__ import annotations

import itertools

import pytest
import torch

from geolip.geometry.procrustes import (
    _hungarian,
    commensuration_lift,
    icp_null_z,
    linear_assignment,
    newton_schulz_sqrt,
    orientation_signature,
    orientation_tensor,
    orthogonal_procrustes,
    procrustes_align,
    procrustes_residual,
    projective_icp,
    projective_procrustes,
    whitened_procrustes,
)
from geolip.geometry.sphere import rownorm


def _haar(D: int, gen: torch.Generator, det: float | None = None) -> torch.Tensor:
    Q, R = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R))
    if det is not None and torch.det(Q) * det < 0:
        Q[:, 0] = -Q[:, 0]
    return Q


def _signs(n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()


def test_orthogonal_procrustes_recovers_random_rotation() -> None:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    Q = _haar(4, gen)
    R = orthogonal_procrustes(X, X @ Q)
    torch.testing.assert_close(R, Q, atol=1e-10, rtol=0)
    R32 = orthogonal_procrustes(X.float(), (X @ Q).float())
    assert R32.dtype == torch.float32
    torch.testing.assert_close(R32, Q.float(), atol=1e-5, rtol=0)
    assert procrustes_residual(X, X @ Q, R) < 1e-12


def test_orthogonal_procrustes_proper_restricts_to_rotations() -> None:
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    Q = _haar(3, gen, det=-1.0)
    torch.testing.assert_close(orthogonal_procrustes(X, X @ Q), Q, atol=1e-10, rtol=0)
    R = orthogonal_procrustes(X, X @ Q, proper=True)
    assert float(torch.det(R)) == pytest.approx(1.0)
    torch.testing.assert_close(R.T @ R, torch.eye(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert procrustes_residual(X, X @ Q, R) > 0.1


def test_orthogonal_procrustes_is_optimal_under_noise() -> None:
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    Y = X @ _haar(4, gen) + 0.3 * torch.randn(30, 4, generator=gen, dtype=torch.float64)
    best = procrustes_residual(X, Y, orthogonal_procrustes(X, Y))
    R = orthogonal_procrustes(X, Y)
    for _ in range(20):  # small random perturbations of the optimum are never better
        P = orthogonal_procrustes(torch.eye(4).double(), R + 0.05 * torch.randn(4, 4).double())
        assert procrustes_residual(X, Y, P) >= best - 1e-12


def test_projective_procrustes_recovers_rotation_with_sign_flips() -> None:
    gen = torch.Generator().manual_seed(3)
    X = rownorm(torch.randn(64, 4, generator=gen, dtype=torch.float64))
    Q, s = _haar(4, gen), _signs(64, gen)
    Y = s[:, None] * (X @ Q)
    R, signs = projective_procrustes(X.float(), Y.float())
    flip = 1.0 if torch.dist(R.double(), Q) < torch.dist(R.double(), -Q) else -1.0
    torch.testing.assert_close(R.double(), flip * Q, atol=1e-5, rtol=0)
    torch.testing.assert_close(signs.double(), flip * s, atol=0, rtol=0)
    torch.testing.assert_close(signs[:, None] * X.float() @ R, Y.float(), atol=1e-5, rtol=0)


def test_linear_assignment_matches_bruteforce() -> None:
    gen = torch.Generator().manual_seed(4)
    for _ in range(5):
        cost = torch.randn(6, 6, generator=gen, dtype=torch.float64)
        best = min(
            itertools.permutations(range(6)), key=lambda p: float(cost[range(6), list(p)].sum())
        )
        assert _hungarian(cost.numpy()).tolist() == list(best)
        assert linear_assignment(cost).tolist() == list(best)


def test_hungarian_agrees_with_scipy_on_larger_problems() -> None:
    scipy_opt = pytest.importorskip("scipy.optimize")
    gen = torch.Generator().manual_seed(5)
    cost = torch.rand(40, 40, generator=gen, dtype=torch.float64).numpy()
    rows, cols = scipy_opt.linear_sum_assignment(cost)
    ours = _hungarian(cost)
    assert cost[range(40), ours].sum() == pytest.approx(cost[rows, cols].sum(), abs=1e-12)


def test_projective_icp_recovers_permutation_signs_and_rotation() -> None:
    gen = torch.Generator().manual_seed(6)
    X = rownorm(torch.randn(24, 4, generator=gen, dtype=torch.float64))
    perm, s, Q = torch.randperm(24, generator=gen), _signs(24, gen), _haar(4, gen)
    Y = s[:, None] * X[perm] @ Q
    res = projective_icp(X, Y)
    assert torch.equal(res.perm, perm)
    torch.testing.assert_close(res.signs[:, None] * X[res.perm] @ res.R, Y, atol=1e-6, rtol=0)
    assert res.residual < 1e-6 and res.distance < 1e-6


def test_icp_null_z_separates_aligned_from_random() -> None:
    gen = torch.Generator().manual_seed(7)
    X = rownorm(torch.randn(16, 4, generator=gen, dtype=torch.float64))
    Y = X[torch.randperm(16, generator=gen)] @ _haar(4, gen)
    assert icp_null_z(X, Y, n_null=20, restarts=0) < -3.0
    noise = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    assert abs(icp_null_z(noise, Y, n_null=20, restarts=0)) < 3.0


def test_procrustes_align_frames_to_reference() -> None:
    gen = torch.Generator().manual_seed(8)
    ref = rownorm(torch.randn(16, 4, generator=gen, dtype=torch.float64))
    frames = [ref, _signs(16, gen)[:, None] * ref @ _haar(4, gen)]
    results = procrustes_align(frames, restarts=0)
    torch.testing.assert_close(results[0].R, torch.eye(4).double(), atol=1e-9, rtol=0)
    assert all(r.residual < 1e-6 for r in results)


def test_orientation_signature_is_sign_and_order_free() -> None:
    gen = torch.Generator().manual_seed(9)
    F = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    sig = orientation_signature(F)
    assert sig.shape == (10,)
    moved = _signs(32, gen)[:, None] * F[torch.randperm(32, generator=gen)] * 2.0
    torch.testing.assert_close(orientation_signature(moved), sig, atol=1e-12, rtol=0)
    Q = _haar(4, gen)
    torch.testing.assert_close(orientation_tensor(F @ Q), Q.T @ orientation_tensor(F) @ Q)
    eigs = orientation_signature(F, with_eigs=True)[10:]
    assert float(eigs.sum()) == pytest.approx(1.0)


def test_newton_schulz_sqrt_and_inverse() -> None:
    gen = torch.Generator().manual_seed(10)
    M = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    C = M.T @ M / 200
    sq, isq = newton_schulz_sqrt(C, iters=10, eps=0.0)
    torch.testing.assert_close(sq @ sq, C, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(isq @ sq, torch.eye(6).double(), atol=1e-8, rtol=0)


def test_whitened_procrustes_inverts_an_affine_map() -> None:
    gen = torch.Generator().manual_seed(11)
    X = torch.randn(600, 8, generator=gen, dtype=torch.float64) @ torch.diag(
        torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    )
    M = torch.randn(8, 8, generator=gen, dtype=torch.float64) + 3 * torch.eye(8).double()
    Y = X @ M + 1.5
    fit = whitened_procrustes(X[:400], Y[:400])
    held_out = fit.apply(X[400:])
    assert procrustes_residual(held_out, Y[400:], torch.eye(8).double()) < 1e-3
    assert commensuration_lift(held_out, Y[400:]) > 0.5
    assert abs(commensuration_lift(X[400:], torch.randn(200, 8, generator=gen).double())) < 0.1


def test_whitened_procrustes_subspace_mode_is_orthogonal() -> None:
    gen = torch.Generator().manual_seed(12)
    X = torch.randn(300, 40, generator=gen, dtype=torch.float64)
    Y = X @ _haar(40, gen)
    fit = whitened_procrustes(X, Y, subspace_k=24)
    torch.testing.assert_close(fit.R.T @ fit.R, torch.eye(40).double(), atol=1e-10, rtol=0)
    rank = torch.linalg.matrix_rank(fit.R - torch.eye(40).double())
    assert int(rank) <= 24
