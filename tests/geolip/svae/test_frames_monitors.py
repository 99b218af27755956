"""Frames, rigidity read-outs and read-only monitors of the SVAE companion (svae.md §3.7, §11,
§12; invariants 8, 17–21 of §18)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from geolip.svae.frames import (
    angle_cv,
    barrier,
    barrier_from_dev,
    canon,
    dev_critical,
    deviation,
    envelope,
    erank,
    normalize_rows,
    omega_cv,
    p50_offset,
    pentachoron_cv,
    projective_angles,
    statute_class,
    uniform_baseline,
    uniform_baseline_exact,
    uniform_median_exact,
)
from geolip.svae.monitors import AlephAssessor, cross_contrast, rigidity_monitor

# §11.1 reference table: D -> (exact mean, numpy-MC mean, median).
TABLE = {
    4: (1.10371, 1.10378, 1.15504),
    8: (1.26640, 1.26642, 1.30809),
    16: (1.36375, 1.36370, 1.39416),
    32: (1.42712, 1.42713, 1.44884),
    64: (1.47014, 1.47011, 1.48552),
    256: (1.52081, 1.52081, 1.52850),
}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _frames(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return normalize_rows(torch.randn(*shape, generator=_gen(seed), dtype=dtype))


def _flip_rows(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    signs = torch.where(torch.rand(x.shape[:-1], generator=_gen(seed)) < 0.5, -1.0, 1.0)
    return x * signs.unsqueeze(-1).to(x.dtype)


# --- canon (invariant 8) ---------------------------------------------------------------------


def test_canon_is_idempotent_sign_blind_and_leads_positive():
    v = torch.randn(500, 4, generator=_gen())
    v[:50, 0] = 0.0  # first coordinate exactly zero: the lead moves to the next one
    v[50:100, 0] = 5e-7  # below the 1e-6 threshold, so it must not decide the sign
    c = canon(v)
    assert torch.equal(canon(c), c)
    assert torch.equal(canon(-v), c)
    first = (c.abs() > 1e-6).float().argmax(dim=-1, keepdim=True)
    assert (c.gather(-1, first) > 0).all()
    assert torch.equal(c.abs(), v.abs())  # a per-row ±1 flip, nothing else


def test_canon_leaves_the_zero_vector_alone():
    assert torch.equal(canon(torch.zeros(3, 4)), torch.zeros(3, 4))


# --- projective angles and baselines (invariant 20) --------------------------------------------


def test_projective_angles_match_brute_force_and_ignore_sign_scale_rotation():
    X = torch.randn(2, 3, 7, 4, generator=_gen(), dtype=torch.float64)
    a = projective_angles(X)
    assert a.shape == (2, 3, 21)
    U = X / X.norm(dim=-1, keepdim=True)
    ref = [
        math.acos(min(abs(float(U[1, 2, i] @ U[1, 2, j])), 1 - 1e-7))
        for i in range(7)
        for j in range(i + 1, 7)
    ]
    assert torch.allclose(a[1, 2], torch.tensor(ref, dtype=torch.float64), atol=1e-12)
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=_gen(2), dtype=torch.float64))
    moved = _flip_rows(X) * 3.0 @ Q
    assert torch.allclose(projective_angles(moved), a, atol=1e-10)
    assert float(a.min()) >= 0 and float(a.max()) <= math.pi / 2


def test_projective_angles_stay_finite_for_repeated_rows():
    X = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0], [0, 1.0, 0, 0]], requires_grad=True)
    a = projective_angles(X)
    assert torch.isfinite(a).all() and float(a.detach()[0]) > 0  # acos(1 − 1e−7), not acos(1)
    a.sum().backward()
    assert torch.isfinite(X.grad).all()


@pytest.mark.parametrize("D", sorted(TABLE))
def test_exact_baseline_and_median_match_the_table(D):
    mean, _, median = TABLE[D]
    assert abs(uniform_baseline_exact(D) - mean) < 1e-4
    assert abs(uniform_median_exact(D) - median) < 3e-3


def test_exact_baseline_closed_form_at_d4():
    assert abs(uniform_baseline_exact(4) - (math.pi / 4 + 1 / math.pi)) < 1e-9
    assert abs(uniform_median_exact(2) - math.pi / 4) < 1e-6  # θ is uniform at D = 2


def test_monte_carlo_baseline_matches_closed_form_and_is_cached():
    before = uniform_baseline.cache_info().hits
    u4 = uniform_baseline(4)
    assert abs(u4 - (math.pi / 4 + 1 / math.pi)) < 3e-3
    assert abs(u4 - TABLE[4][1]) < 3e-3
    assert uniform_baseline(4) == u4
    assert uniform_baseline.cache_info().hits > before
    assert abs(uniform_baseline(16, n=1024) - TABLE[16][1]) < 3e-3


def test_dev_critical_values():
    assert dev_critical(4) == pytest.approx(0.04, abs=1e-12)
    assert dev_critical(16) == pytest.approx(0.08, abs=1e-12)


# --- deviation, envelope, barrier, statute (invariants 4, 21) ---------------------------------


def test_deviation_is_preserved_by_an_isometric_lift_only_against_the_intrinsic_baseline():
    M = _frames(3, 5, 32, 4, dtype=torch.float64)
    E, _ = torch.linalg.qr(torch.randn(16, 4, generator=_gen(3), dtype=torch.float64))
    lifted = M @ E.T
    d_stem, d_lens = deviation(M, 4), deviation(lifted, 4)
    assert d_stem.shape == (3, 5)
    assert torch.allclose(d_stem, d_lens, atol=1e-10)
    gap = uniform_baseline_exact(4) - uniform_baseline_exact(16)
    assert torch.allclose(deviation(lifted, 16), d_lens + gap, atol=1e-10)
    assert gap < -0.25  # the §5 worked example: ≈ −0.26, far outside ±0.08
    assert torch.allclose(deviation(M, 4, baseline="mc"), d_stem, atol=3e-3)
    with pytest.raises(ValueError, match="baseline"):
        deviation(M, 4, baseline="median")


def test_envelope_reports_mean_fraction_and_the_first_frame():
    crit = dev_critical(4)
    devs = torch.tensor([[0.05, 0.01], [-0.01, -0.02]])
    out = envelope(devs, 4)
    assert out["frame_deviation"] == pytest.approx(0.0075)
    assert out["frame_abs_dev_mean"] == pytest.approx(0.0225)
    assert out["frac_in_envelope"] == pytest.approx(0.75)
    assert out["in_envelope"] is False  # frame [0, 0] is outside although most frames are in
    assert out["dev_critical"] == crit
    assert envelope(devs.flip(0), 4)["in_envelope"] is True


def test_barrier_is_zero_inside_the_margin_and_quadratic_outside():
    m, D = 0.5, 4
    edge = m * dev_critical(D)
    inside = torch.tensor([0.0, edge, -edge, 0.3 * edge])
    assert float(barrier_from_dev(inside, D, m)) == 0.0
    for e in (1e-3, 4e-3, 1e-2):
        one = float(barrier_from_dev(torch.tensor([edge + e]), D, m))
        assert one == pytest.approx(e**2, rel=1e-4)
        two = float(barrier_from_dev(torch.tensor([-(edge + 2 * e)]), D, m))
        assert two == pytest.approx(4 * one, rel=1e-4)
    mixed = torch.tensor([0.0, edge + 1e-2])  # mean over frames
    assert float(barrier_from_dev(mixed, D, m)) == pytest.approx(1e-4 / 2, rel=1e-4)


def test_barrier_on_frames_matches_deviation_and_has_gradient():
    uniformish = _frames(1, 1, 2048, 4, seed=4)  # |dev| ~ 1e-3 « 0.02
    assert float(barrier(uniformish, 4)) == 0.0
    clumped = normalize_rows(torch.tensor([1.0, 0, 0, 0]) + 0.3 * torch.randn(2, 3, 32, 4))
    clumped.requires_grad_(True)
    b = barrier(clumped, 4)
    expected = float(barrier_from_dev(deviation(clumped, 4), 4).detach())
    assert float(b.detach()) > 0 and float(b.detach()) == pytest.approx(expected, rel=1e-6)
    b.backward()
    assert clumped.grad is not None and float(clumped.grad.abs().sum()) > 0


@pytest.mark.parametrize(
    ("dev", "D", "cls"),
    [
        (0.0, 4, "uniform"),
        (0.039, 4, "uniform"),
        (-0.039, 4, "uniform"),
        (0.041, 4, "polytope-R2"),
        (0.083, 4, "polytope-R2"),
        (-0.041, 4, "sub-uniform"),
        (0.049, 16, "uniform"),
        (0.06, 16, "polytope-R1"),
        (0.09, 16, "polytope-R2"),
        (-0.06, 16, "sub-uniform"),
    ],
)
def test_statute_classes(dev, D, cls):
    assert statute_class(dev, D) == cls


def test_polytope_r1_is_empty_at_d4():
    devs = torch.linspace(-0.2, 0.2, 4001).tolist()
    assert all(statute_class(d, 4) != "polytope-R1" for d in devs)


def test_p50_offset_and_angle_cv():
    X = _frames(600, 4, seed=5, dtype=torch.float64)
    assert abs(float(p50_offset(X, 4))) < 0.02  # uniform lines sit at the uniform median
    a = projective_angles(X)
    assert float(angle_cv(X)) == pytest.approx(float(a.std(correction=0) / a.mean()), rel=1e-12)
    assert torch.allclose(angle_cv(_flip_rows(X)), angle_cv(X), atol=1e-12)
    clumped = normalize_rows(torch.tensor([1.0, 0, 0, 0]) + 0.2 * X)
    assert float(p50_offset(clumped, 4)) < -0.3


# --- CV probes and erank ----------------------------------------------------------------------


def test_omega_cv():
    assert omega_cv(torch.full((2, 3, 16), 1.3)) == pytest.approx(0.0, abs=1e-12)
    w = torch.tensor([1.0, 3.0])
    assert omega_cv(w) == pytest.approx(float(w.std() / w.mean()))


def _regular_simplex_s3() -> torch.Tensor:
    """Five unit vectors in R^4 with pairwise cos −1/4 (a regular 4-simplex on S³)."""
    C = torch.eye(5, dtype=torch.float64) - 1.0 / 5
    eigval, eigvec = torch.linalg.eigh(C)  # C = I − J/5 has rank 4
    X = eigvec[:, 1:] * eigval[1:].sqrt()
    return normalize_rows(X)


def test_pentachoron_cv_zero_for_congruent_simplices_and_matches_brute_force():
    assert pentachoron_cv(_regular_simplex_s3()) == pytest.approx(0.0, abs=1e-9)
    X = _frames(32, 4, seed=6, dtype=torch.float64)
    idx = torch.rand(200, 32, generator=_gen(0)).argsort(dim=1)[:, :5]
    edges = X[idx][:, 1:] - X[idx][:, :1]  # [200, 4, D]
    vol = torch.linalg.det(edges @ edges.transpose(1, 2)).clamp_min(0).sqrt() / 24
    vol = vol[vol**2 > 1e-20]
    assert pentachoron_cv(X) == pytest.approx(float(vol.std() / vol.mean()), rel=1e-6)
    assert pentachoron_cv(3.0 * X) == pytest.approx(pentachoron_cv(X), rel=1e-9)
    assert math.isnan(pentachoron_cv(_frames(32, 3, seed=7)))  # 5 points in R³ span no volume
    with pytest.raises(ValueError, match="one frame"):
        pentachoron_cv(X[None])


def test_erank():
    assert torch.allclose(erank(torch.ones(2, 16)), torch.full((2,), 16.0))
    assert float(erank(torch.tensor([3.0, 0.0, 0.0, 0.0]))) == pytest.approx(1.0)
    assert float(erank(torch.tensor([1.0, 1.0, 0.0]))) == pytest.approx(2.0)


# --- monitors (invariants 17, 18, 19) --------------------------------------------------------


def test_aleph_codebook_is_a_deterministic_buffer():
    a, b = AlephAssessor(4, K=64, tau=0.1, seed=3), AlephAssessor(4, K=64, tau=0.1, seed=3)
    assert torch.equal(a.codebook, b.codebook)
    g = torch.Generator().manual_seed(3 + 7)
    assert torch.equal(a.codebook, canon(normalize_rows(torch.randn(64, 4, generator=g))))
    assert "codebook" in a.state_dict() and len(list(a.parameters())) == 0
    assert not torch.equal(a.codebook, AlephAssessor(4, seed=4).codebook)
    with pytest.raises(ValueError, match="codebook"):
        AlephAssessor(4, K=8, codebook=torch.randn(8, 3))


def test_aleph_address_is_sign_and_scale_blind_and_codes_are_nonzero():
    aleph = AlephAssessor(4, K=64)
    M = _frames(2, 8, 32, 4, seed=8)
    out = aleph(M)
    flipped = aleph(2.5 * _flip_rows(M))
    for key in ("axis", "sign", "margin"):
        assert torch.allclose(out[key].float(), flipped[key].float(), atol=1e-6), key
    assert out["axis"].shape == out["code"].shape == (2, 8, 32)
    assert out["margin"].shape == out["assign"].shape == (2, 8, 32, 64)
    code = out["code"]
    assert code.dtype == torch.long and ((code.abs() >= 1) & (code.abs() <= 64)).all()
    assert torch.equal(code, (out["axis"] + 1) * out["sign"].long())
    assert torch.allclose(out["assign"].sum(-1), torch.ones(2, 8, 32))
    assert (out["margin"] < 1).all()


def test_monitors_are_read_only():
    torch.manual_seed(0)
    net = nn.Linear(12, 32 * 4)
    M = normalize_rows(net(torch.randn(2, 8, 12)).reshape(2, 8, 32, 4))
    M.pow(2).sum().backward(retain_graph=True)
    grads = [p.grad.clone() for p in net.parameters()]
    aleph = AlephAssessor(4)
    out = aleph(M)
    cc = cross_contrast(M, aleph.codebook, 0.1)
    rig = rigidity_monitor(M, 4)
    assert all(not v.requires_grad for v in out.values())
    assert not cc.requires_grad and cc.ndim == 0
    assert all(isinstance(v, (float, bool)) for v in rig.values())
    assert set(rig) >= {"frame_abs_dev_mean", "frac_in_envelope", "in_envelope", "barrier"}
    for p, g in zip(net.parameters(), grads):
        assert torch.equal(p.grad, g)


def test_cross_contrast_bounds_and_extremes():
    aleph = AlephAssessor(4, K=64)
    K = 64
    cc = float(cross_contrast(_frames(4, 16, 32, 4, seed=9), aleph.codebook, 0.1))
    assert -math.log(K) <= cc <= math.log(K) and cc <= 1e-9
    same = _frames(1, 4, seed=10).expand(3, 5, 32, 4)  # every row identical: one p for all
    assert abs(float(cross_contrast(same, aleph.codebook, 0.1))) < 1e-6
    # Each row sits on its own axis, with a cold τ: rows commit, the batch uses all K axes.
    committed = float(cross_contrast(aleph.codebook[None, None], aleph.codebook, 0.005))
    assert committed < -0.9 * math.log(K)
