"""Bank log-sum-exp: the tiled online-LSE path against the materialised oracle."""

from __future__ import annotations

import pytest
import torch

from geolip.geometry.sphere import rownorm
from geolip.ops.bank_lse import bank_logsumexp

R, N, KD = 6, 100, 16


def make_inputs(r=R, n=N, k=KD, *, seed=0, scale=10.0, dtype=torch.float64):
    """Unit rows r: [r, k], unit candidates e: [n, k], positive scale: [r], log-prior bias: [n]."""
    gen = torch.Generator().manual_seed(seed)
    rr = rownorm(torch.randn(r, k, generator=gen, dtype=torch.float64))
    e = rownorm(torch.randn(n, k, generator=gen, dtype=torch.float64))
    s = scale * (0.5 + torch.rand(r, generator=gen, dtype=torch.float64))
    bias = torch.log_softmax(torch.randn(n, generator=gen, dtype=torch.float64), dim=0)
    return tuple(x.to(dtype) for x in (rr, e, s, bias))


def value_and_grads(impl, r, e, s, bias, tile=8192):
    leaves = [x.detach().clone().requires_grad_() for x in (r, e, s)]
    if bias is not None:
        leaves.append(bias.detach().clone().requires_grad_())
    out = bank_logsumexp(*leaves[:3], leaves[3] if bias is not None else None, tile=tile, impl=impl)
    gen = torch.Generator().manual_seed(99)
    cot = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)
    return (out.detach(), *torch.autograd.grad((out * cot).sum(), leaves))


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("tile", [1, 7, 64, N])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiled_equals_naive(tile, with_bias, dtype):
    r, e, s, bias = make_inputs(seed=tile, dtype=dtype)
    bias = bias if with_bias else None
    got = value_and_grads("tiled", r, e, s, bias, tile=tile)
    ref = value_and_grads("naive", r, e, s, bias)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert len(got) == (5 if with_bias else 4)
    for a, b in zip(got, ref):
        assert a.dtype == dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_gradcheck_fp64_tiny():
    r, e, s, bias = (x.requires_grad_() for x in make_inputs(3, 5, 4, seed=1, scale=2.0))
    assert torch.autograd.gradcheck(
        lambda *a: bank_logsumexp(*a, tile=2, impl="tiled"), (r, e, s, bias)
    )
    assert torch.autograd.gradcheck(
        lambda *a: bank_logsumexp(*a, None, tile=2, impl="tiled"), (r, e, s)
    )


@pytest.mark.parametrize("tile", [1, 7, 64])
def test_extreme_logits_finite(tile):
    r, e, s, bias = make_inputs(seed=3, dtype=torch.float32)
    s = torch.full_like(s, 200.0)
    # One candidate exactly on a row: a logit of 200 beside ones near −200.
    e = torch.cat([e[:50], r[:1], -r[:1], e[50:]])
    bias = torch.cat([bias[:50], torch.zeros(2), bias[50:]])
    got = value_and_grads("tiled", r, e, s, bias, tile=tile)
    ref = value_and_grads("naive", *(x.double() for x in (r, e, s, bias)))
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-4)
    assert got[0][0].item() >= 200.0


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16])
def test_autocast_bf16_returns_fp32(in_dtype):
    r, e, s, bias = make_inputs(seed=4, dtype=torch.float32)
    ref = bank_logsumexp(r, e, s, bias, tile=7, impl="naive")
    leaves = [x.to(in_dtype).requires_grad_() for x in (r, e, s, bias)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bank_logsumexp(*leaves, tile=7, impl="tiled")
    assert out.dtype == torch.float32
    out.sum().backward()
    assert all(x.grad is not None and x.grad.dtype == in_dtype for x in leaves)
    assert all(torch.isfinite(x.grad.float()).all() for x in leaves)
    tol = 1e-5 if in_dtype == torch.float32 else 0.2
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("tile", [1, 7])
def test_minus_inf_bias_on_first_tile(tile):
    # Spec T13: a never-occurring trigram may carry ρ = −∞; it must not change the normaliser.
    r, e, s, bias = make_inputs(seed=5)
    bias = bias.clone()
    bias[:7] = float("-inf")
    ref = bank_logsumexp(r, e[7:], s, bias[7:], impl="naive")
    torch.testing.assert_close(bank_logsumexp(r, e, s, bias, tile=tile), ref)
    # The −∞ candidates take no probability mass, hence no gradient; the rest match the oracle.
    got = value_and_grads("tiled", r, e, s, bias, tile=tile)
    ref = value_and_grads("naive", r, e[7:], s, bias[7:])
    assert all(torch.isfinite(x).all() for x in got)
    assert torch.count_nonzero(got[2][:7]) == 0 and torch.count_nonzero(got[4][:7]) == 0
    for a, b in zip((got[0], got[1], got[2][7:], got[3], got[4][7:]), ref):
        torch.testing.assert_close(a, b)


def test_unknown_impl():
    r, e, s, bias = make_inputs()
    with pytest.raises(ValueError, match="impl"):
        bank_logsumexp(r, e, s, bias, impl="flash")
