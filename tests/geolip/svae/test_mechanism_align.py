"""Mechanism A/B verdict (svae.md §14; invariant 28 of §18) and Procrustes alignment of frames
(§15)."""

from __future__ import annotations

import math

import pytest
import torch

from geolip.svae.align import (
    aligned_lens,
    bank_frame,
    null_z,
    orientation_signature,
    orientation_tensor,
    projective_procrustes,
)
from geolip.svae.frames import canon, normalize_rows
from geolip.svae.mechanism import (
    alpha_delta,
    alpha_init,
    attention_entropy_ratio,
    classify_mechanism,
    mechanism_verdict,
    relative_modulation,
)

A0 = 0.2 / (1 + math.exp(2.0))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- α and the verdict (invariant 28) -----------------------------------------------------------


def test_alpha_init():
    assert abs(alpha_init() - 0.0238406) < 1e-7
    assert alpha_init(0.2, 0.0) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("d_alpha", "gain", "gain_std", "expected"),
    [
        (0.005, 1e-4, None, "A"),  # threshold is inclusive
        (0.0049, 1e-4, None, "indeterminate"),
        (0.007, 0.0, None, "indeterminate"),  # engaged but switching it off costs nothing
        (0.007, 0.01, 0.004, "A"),  # g > 2σ over seeds
        (0.007, 0.01, 0.006, "indeterminate"),  # g within 2σ of 0
        (0.002, 0.01 * 0.05, None, "B"),  # both B thresholds inclusive (mse_trained = 0.05)
        (-0.002, -0.01 * 0.05, None, "B"),
        (0.0, 0.011 * 0.05, None, "indeterminate"),  # not negligible
        (0.0021, 0.0, None, "indeterminate"),
        (0.003, 0.0, None, "indeterminate"),  # the seed's bert-tiny run
        (-0.006, 0.01, None, "indeterminate"),
    ],
)
def test_classifier_thresholds(d_alpha, gain, gain_std, expected):
    assert classify_mechanism(d_alpha, gain, gain_std, mse_trained=0.05) == expected


def test_classifier_needs_the_loss_scale():
    with pytest.raises(TypeError):
        classify_mechanism(0.0, 0.0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=">= 0"):
        classify_mechanism(0.0, 0.0, mse_trained=-1.0)


def _trajectory(final: float, epochs: int = 40, noise: float = 2e-4, seed: int = 0):
    """Synthetic per-epoch, per-layer, per-mode α: [epochs, 2, 16], easing from α(0) to final."""
    t = torch.linspace(0, 1, epochs)[:, None, None]
    eps = noise * torch.randn(epochs, 2, 16, generator=_gen(seed))
    eps[0] = 0.0
    return A0 + (final - A0) * (1 - (1 - t) ** 2) + eps - eps[-1].mean() * (t == 1)


def test_verdict_on_synthetic_structured_and_shuffled_runs():
    structured = mechanism_verdict(_trajectory(0.031), [0.020, 0.026, 0.023], mse_trained=0.04)
    assert structured["mechanism"] == "A"
    assert structured["alpha_delta"] == pytest.approx(0.031 - A0, abs=1e-6)
    assert structured["gain_std"] == pytest.approx(float(torch.tensor([0.020, 0.026, 0.023]).std()))
    shuffled = mechanism_verdict(_trajectory(A0, seed=1), [1e-5, -2e-5, 0.0], mse_trained=0.04)
    assert shuffled["mechanism"] == "B" and abs(shuffled["alpha_delta"]) < 1e-6
    weak = mechanism_verdict(_trajectory(0.027, seed=2), [1e-4], mse_trained=0.3)
    assert weak["mechanism"] == "indeterminate" and weak["gain_std"] is None
    # α engaged on one seed's luck only: the seed spread swallows the gain.
    noisy = mechanism_verdict(_trajectory(0.031), [0.03, -0.02, 0.01], mse_trained=0.04)
    assert noisy["mechanism"] == "indeterminate"


def test_alpha_delta_reads_the_last_step():
    assert alpha_delta([A0, 0.025, 0.030]) == pytest.approx(0.030 - A0)
    assert alpha_delta(torch.full((3, 2), 0.05), alpha0=0.02) == pytest.approx(0.03)
    with pytest.raises(ValueError, match="non-empty"):
        alpha_delta([])


def test_relative_modulation_and_attention_entropy():
    omega = 1.0 + torch.rand(2, 64, 16, generator=_gen(1))
    assert relative_modulation(omega, omega) == 0.0
    assert relative_modulation(1.1 * omega, omega) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="shapes differ"):
        relative_modulation(omega, omega[:, :1])
    uniform = torch.full((2, 4, 64, 64), 1 / 64)
    assert attention_entropy_ratio(uniform) == pytest.approx(1.0)
    assert attention_entropy_ratio(torch.eye(64).expand(2, 4, 64, 64)) == pytest.approx(0.0)
    half = torch.zeros(1, 8, 8)
    half[..., :4] = 0.25
    assert attention_entropy_ratio(half) == pytest.approx(math.log(4) / math.log(8))
    with pytest.raises(ValueError, match="N_k >= 2"):
        attention_entropy_ratio(torch.ones(3, 1))


# --- alignment (§15) ---------------------------------------------------------------------------


def _haar(D: int, seed: int) -> torch.Tensor:
    Q, R = torch.linalg.qr(torch.randn(D, D, generator=_gen(seed), dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))


def _gauge_copy(B: torch.Tensor, seed: int):
    """A = s ⊙ (B[π] Qᵀ): frame B seen through a random rotation, permutation and sign flips."""
    g = _gen(seed)
    Q = _haar(B.shape[1], seed + 100)
    perm = torch.randperm(B.shape[0], generator=g)
    signs = torch.where(torch.rand(B.shape[0], generator=g) < 0.5, -1.0, 1.0).double()
    return signs[:, None] * (B[perm] @ Q.T), Q, perm, signs


def test_bank_frame_averages_rows_then_canonicalises():
    F = normalize_rows(torch.randn(32, 4, generator=_gen(2)))
    noise = 0.05 * torch.randn(6, 10, 32, 4, generator=_gen(3))
    frame = bank_frame(normalize_rows(F + noise))
    assert frame.shape == (32, 4)
    assert torch.allclose(frame.norm(dim=-1), torch.ones(32), atol=1e-6)
    assert torch.equal(canon(frame), frame)
    assert float((frame * canon(F)).sum(-1).min()) > 0.99


def test_projective_procrustes_recovers_rotation_permutation_and_signs():
    B = normalize_rows(torch.randn(32, 4, generator=_gen(4), dtype=torch.float64))
    A, Q, perm, signs = _gauge_copy(B, seed=5)
    out = projective_procrustes(A, B)
    assert out["residual"] < 1e-5 and out["distance"] < 1e-6
    assert torch.equal(out["perm"], perm)
    R, s = out["R"], out["signs"]
    assert torch.allclose(R.T @ R, torch.eye(4, dtype=torch.float64), atol=1e-10)
    # (R, s) and (−R, −s) are the same gauge: fix the global sign before comparing.
    flip = 1.0 if float((R * Q).sum()) > 0 else -1.0
    assert torch.allclose(flip * R, Q, atol=1e-8)
    assert torch.equal(flip * s, signs)
    assert torch.allclose(s[:, None] * (B[out["perm"]] @ R.T), A, atol=1e-8)


def test_null_z_is_large_for_a_gauge_copy_and_small_for_an_unrelated_frame():
    B = normalize_rows(torch.randn(32, 4, generator=_gen(6), dtype=torch.float64))
    A, *_ = _gauge_copy(B, seed=7)
    assert null_z(A, B, n=40, seed=1, restarts=0) > 4.0
    other = normalize_rows(torch.randn(32, 4, generator=_gen(8), dtype=torch.float64))
    assert abs(null_z(other, B, n=40, seed=1, restarts=0)) < 3.0


def test_orientation_tensor_is_a_gauge_free_signature():
    F = normalize_rows(torch.randn(32, 4, generator=_gen(9), dtype=torch.float64))
    A, Q, _, _ = _gauge_copy(F, seed=10)
    T = orientation_tensor(F)
    assert T.shape == (4, 4) and float(torch.trace(T)) == pytest.approx(1.0)
    # Row signs and order drop out; a rotation acts by conjugation.
    assert torch.allclose(orientation_tensor(A), Q @ T @ Q.T, atol=1e-12)
    assert orientation_signature(F).shape == (10,)
    assert orientation_signature(F, with_eigs=True).shape == (14,)


def test_aligned_lens_stays_isometric_and_lifts_aligned_rows():
    E, _ = torch.linalg.qr(torch.randn(16, 4, generator=_gen(11), dtype=torch.float64))
    R = _haar(4, 12)
    E2 = aligned_lens(E, R)
    assert torch.allclose(E2.T @ E2, torch.eye(4, dtype=torch.float64), atol=1e-12)
    b = torch.randn(5, 4, generator=_gen(13), dtype=torch.float64)
    assert torch.allclose(b @ E2.T, (b @ R.T) @ E.T, atol=1e-12)
    with pytest.raises(ValueError, match="D_b"):
        aligned_lens(E, torch.eye(3, dtype=torch.float64))
