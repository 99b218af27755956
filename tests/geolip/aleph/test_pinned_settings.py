"""Settings of the model card pinned to their formulas (spec §2, §3, §6, §11.1).

Each test recomputes one quantity from the spec's formula, by hand, and compares it with what
the model computes. A model that ignores a setting (the hub addressing at τ = 1, τ_κ multiplying
instead of dividing, the pointer scale left unclamped, apmix candidates addressed at τ = 1, the
``spread`` arm drawing a random codebook) fails here, although it would still train.
"""

from __future__ import annotations

import math

import pytest
import torch
from aleph_configs import tiny_cfg

from geolip.aleph.codebook import build_codebook
from geolip.aleph.experiments.preservation import arm_config
from geolip.geometry.gauge import angle_spread
from geolip.geometry.spread import random_codebook, spread_codebook

TAU = 0.2  # neither the preset's 0.1 nor 1: a setting that is read shows here


def _phi(x: torch.Tensor, axes: torch.Tensor, tau: float) -> torch.Tensor:
    """The oriented address by the spec's formula: ``u = x̂Aᵀ/τ``, ``p± = exp(±u − m)/Z``.
    x: [..., D]; axes: [K, D] unit rows -> [..., 2K] (float64)."""
    x, axes = x.double(), axes.double()
    u = (x / x.norm(dim=-1, keepdim=True)) @ axes.T / tau
    m = u.abs().amax(dim=-1, keepdim=True)
    e = torch.cat([torch.exp(u - m), torch.exp(-u - m)], dim=-1)
    return e / e.sum(dim=-1, keepdim=True)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    return float((a.double() - b.double()).abs().max()) <= tol


@torch.no_grad()
def test_the_hub_addresses_queries_and_keys_at_the_models_tau(make_model):
    model = make_model("byte", tau=TAU)
    hub, axes = model.blocks[0].hub, model.hub_axes(0)
    x = torch.randn(2, 5, model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    f, g, _ = hub.addresses(x, axes)
    H, D = hub.n_heads, hub.D
    q = (x @ hub.W_q.weight.T).view(2, 5, H, D).transpose(1, 2)
    k = (x @ hub.W_k.weight.T).view(2, 5, H, D).transpose(1, 2)
    assert _close(f, _phi(q, axes, TAU)) and _close(g, _phi(k, axes, TAU))
    assert not _close(f, _phi(q, axes, 1.0), 1e-2)  # τ matters at this size


@torch.no_grad()
def test_every_layer_and_head_reads_the_configured_tau(make_model):
    for head in ("byte", "kernel", "pmix", "apmix"):
        model = make_model(head, tau=TAU)
        assert {block.hub.tau for block in model.blocks} == {TAU}, head
        if head in ("kernel", "apmix"):  # the heads that address on the codebook
            assert model.head.tau == TAU, head


@torch.no_grad()
def test_kernel_emissions_divide_by_tau_kappa(make_model):
    """``logκ_i = log_softmax_j(⟨U_i, ψ_j⟩/τ_κ + ρ_j)`` (§6.1), at a τ_κ ≠ 1 (at its init of 1.0,
    dividing and multiplying agree)."""
    model = make_model("kernel", tau=TAU)
    head, ctx = model.head, model.bank_context()
    head.log_tau_k.fill_(math.log(0.25))
    expect = torch.log_softmax(head.U.double() @ ctx.psi.double().T / 0.25 + ctx.prior, -1)
    assert _close(head.log_kappa(ctx), expect)


@torch.no_grad()
def test_kernel_context_address_is_at_tau(make_model):
    model = make_model("kernel", tau=TAU)
    head, ctx = model.head, model.bank_context()
    h = torch.randn(3, model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    expect = _phi(h @ head.W_pi.weight.T, ctx.axes, TAU).log()
    assert _close(head.log_pi(h, ctx), expect)


@pytest.mark.parametrize("head", ["pmix", "apmix"])
@torch.no_grad()
def test_the_pointer_scale_is_clamped_where_the_distribution_is_computed(make_model, head):
    """``s_m = exp(θ_m)``, clamped at ``scale_max`` (§6.2/§6.3): a θ driven far above the clamp
    scores exactly as a θ at it."""
    model = make_model(head)
    ptr, ctx = model.head, model.bank_context()
    cap = model.cfg.head.pmix.scale_max if head == "pmix" else model.cfg.head.apmix.scale_max
    h = torch.randn(4, model.cfg.d_model, generator=torch.Generator().manual_seed(2))
    j = torch.arange(4).view(1, 4) % ctx.psi.shape[0]
    ptr.theta.fill_(math.log(cap))
    at_cap = ptr.all_log_q(h, ctx), ptr.target_log_q(h.view(1, 4, -1), j, ctx)
    ptr.theta.fill_(math.log(cap * 50))
    assert torch.allclose(ptr.scale(), torch.full_like(ptr.scale(), cap))
    assert _close(ptr.all_log_q(h, ctx), at_cap[0])
    assert _close(ptr.target_log_q(h.view(1, 4, -1), j, ctx), at_cap[1])


@torch.no_grad()
def test_apmix_pointers_and_through_candidates_are_addressed_at_tau(make_model):
    """``r = √φ(P^a h)`` and, in ``through`` mode, ``e_j = √φ(W_c ψ_j)``, both on the same
    codebook at the model's τ (§6.3)."""
    model = make_model("apmix", tau=TAU)
    head, ctx = model.head, model.bank_context()
    assert head.mode == "through"
    expect = _phi(ctx.psi @ head.W_c.weight.T, ctx.axes, TAU).sqrt()
    assert _close(head.candidates(ctx), expect)
    h = torch.randn(3, model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    q = (h @ head.P_a.weight.T).unflatten(-1, (head.J, head.D))
    assert _close(head.pointers(h, ctx), _phi(q, ctx.axes, TAU).sqrt())


def test_the_spread_arm_freezes_the_spread_packing_and_its_control_is_random():
    """§11.1: ``spread`` is the maximal-spread line packing (θ_min ≥ 25° at K=64, D=4), frozen;
    ``frozen_random`` is the seeded random codebook it is compared with."""
    base = tiny_cfg("kernel", K=64, D=4)
    spread = build_codebook(arm_config(base, "spread"))
    assert not spread.trainable
    packing = spread_codebook(64, 4)
    expect = packing / packing.norm(dim=-1, keepdim=True)
    assert _close(spread.axes(), expect, 1e-6)
    assert angle_spread(spread.axes())[0] >= 25.0
    control = build_codebook(arm_config(base, "frozen_random"))
    rand = random_codebook(64, 4, base.codebook.seed)
    assert not control.trainable
    assert _close(control.axes(), rand / rand.norm(dim=-1, keepdim=True), 1e-6)
    assert angle_spread(control.axes())[0] < 15.0
