"""Grafting and bank swap (spec §13; tests T13, T17)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import make, nll

from geolip.aleph.bank import TrigramBank, bank_from_bytes
from geolip.aleph.experiments.contrast import permute
from geolip.aleph.experiments.graft import (
    GraftError,
    graft_depth,
    graft_head_retrofit,
    graft_mixture,
    swap_bank,
)


def block_state(model, layer: int) -> dict[str, torch.Tensor]:
    return model.blocks[layer].state_dict()


# -- T17: grafts -------------------------------------------------------------------------------


@pytest.mark.parametrize(("head", "new_J"), [("pmix", 8), ("pmix", 6), ("apmix", 8)])
def test_T17_tile_graft_sigma0_reproduces_donor(bank, window, head, new_J):
    donor = make(head, bank)
    graft = graft_mixture(donor, new_J, jitter=0.0)
    assert graft.cfg.head.n_pointers == new_J and donor.cfg.head.n_pointers == 4
    with torch.no_grad():
        h = donor.backbone(window[:, :-1])[0].flatten(0, 1)  # [B·T, d]; the graft's is identical
        q_d = donor.head.all_log_q(h, donor.bank_context()).exp()  # [B·T, N]
        q_g = graft.head.all_log_q(h, graft.bank_context()).exp()
    err = (q_g - q_d).abs().max().item()
    assert err <= 1e-6, f"σ=0 tile graft {head} 4→{new_J} moved q by {err:.2e}"
    # NLLs ≈ 16 nats sit at an fp32 ulp of 1.9e-6, so they match to rounding, not to 1e-6 absolute.
    torch.testing.assert_close(nll(graft, window), nll(donor, window), rtol=1e-6, atol=1e-6)


def test_T17_tile_graft_jitter_touches_only_later_copies(bank):
    donor = make("pmix", bank)
    graft = graft_mixture(donor, 8, jitter=0.01, seed=1)
    P0 = donor.head.P.weight.view(4, -1, 64)
    P1 = graft.head.P.weight.view(8, -1, 64)
    assert torch.equal(P1[:4], P0)
    rel = (P1[4:] - P0).norm() / P0.norm()
    assert 1e-3 < rel < 0.05, f"jitter 0.01·std should move later copies by ~1%, got {rel:.3g}"


def test_T17_depth_graft_identity_when_L_equal(bank, window):
    donor = make("pmix", bank)
    graft = graft_depth(donor, donor.cfg.n_layers)
    assert torch.equal(nll(graft, window), nll(donor, window))


@pytest.mark.parametrize("sharing", ["all", "layer"])
def test_T17_depth_graft_endpoints_and_interpolation(bank, sharing):
    donor = make("byte", bank, n_layers=4, codebook__sharing=sharing)
    graft = graft_depth(donor, 6)  # s = 0, 0.6, 1.2, 1.8, 2.4, 3.0
    assert graft.cfg.n_layers == 6 and donor.cfg.n_layers == 4
    for new, old in [(0, 0), (5, 3)]:
        for k, v in block_state(graft, new).items():
            assert torch.equal(v, block_state(donor, old)[k]), f"layer {new} {k}"
    w0, w1 = block_state(donor, 0), block_state(donor, 1)
    for k, v in block_state(graft, 1).items():
        torch.testing.assert_close(v, 0.4 * w0[k] + 0.6 * w1[k], rtol=0, atol=1e-6)
    if sharing == "layer":  # round(s) = 0, 1, 1, 2, 2, 3: copied, never averaged
        for new, old in enumerate([0, 1, 1, 2, 2, 3]):
            assert torch.equal(graft.codebooks[new].A_raw, donor.codebooks[old].A_raw)
    else:
        assert torch.equal(graft.codebooks[0].A_raw, donor.codebooks[0].A_raw)


def test_T17_head_retrofit_preserves_h_g_tail_bitwise(bank, window):
    donor = make("pmix", bank)
    graft = graft_head_retrofit(donor, seed=3)
    assert graft.cfg.head.kind == "apmix" and graft.cfg.head.apmix.mode == "through"
    ids = window[:, :-1]
    with torch.no_grad():
        h_d, h_g = donor.backbone(ids)[0], graft.backbone(ids)[0]
        assert torch.equal(h_g, h_d)
        assert torch.equal(graft.gate(h_g), donor.gate(h_d))
        assert torch.equal(graft.tail(h_g), donor.tail(h_d))
    assert torch.equal(graft.head.G.weight, donor.head.G.weight)
    assert torch.equal(graft.head.G.bias, donor.head.G.bias)
    scale = graft.head.scale()
    torch.testing.assert_close(scale, torch.full_like(scale, 20.0))
    assert not torch.equal(nll(graft, window), nll(donor, window)), "only q changes, but it does"


def test_grafts_leave_the_donor_untouched(bank):
    donor = make("pmix", bank)
    before = {k: v.clone() for k, v in donor.state_dict().items()}
    graft_mixture(donor, 8)
    graft_depth(donor, 3)
    graft_head_retrofit(donor)
    after = donor.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_graft_errors(bank):
    pmix, byte, kernel = make("pmix", bank), make("byte", bank), make("kernel", bank)
    with pytest.raises(GraftError, match=">= 2"):
        graft_depth(pmix, 1)
    wide = dataclasses.replace(pmix.cfg, d_model=128)
    with pytest.raises(GraftError, match="d_model"):
        graft_depth(pmix, 3, cfg=wide)
    for donor in (byte, kernel):
        with pytest.raises(GraftError, match="pmix or apmix"):
            graft_mixture(donor, 8)
    with pytest.raises(GraftError, match="drop pointers"):
        graft_mixture(pmix, 2)
    for donor in (byte, kernel, make("apmix", bank)):
        with pytest.raises(GraftError, match="pmix donor"):
            graft_head_retrofit(donor)
    with pytest.raises(GraftError, match="ablation override"):
        graft_depth(permute(pmix, scope="routing"), 3)


# -- T13 and §13.4: the bank is data -------------------------------------------------------------

BANK_HEADS = ["kernel", "pmix", "apmix", "apmix_free"]


@torch.no_grad()
def loss(model, w: torch.Tensor) -> float:
    return float(model.eval()(w[:, :-1], w[:, 1:]).nll.double().mean())


@pytest.mark.parametrize("mixture", ["blend", "switch"])
@pytest.mark.parametrize("head", BANK_HEADS)
def test_T13_bank_row_permutation_and_never_occurring_trigram(bank, window, head, mixture):
    model = make(head, bank, head__mixture=mixture)
    base = loss(model, window)
    perm = torch.randperm(bank.size, generator=torch.Generator().manual_seed(0))
    shuffled = TrigramBank(bank.trigrams[perm], bank.log_prior[perm], bank.provenance)
    assert abs(loss(swap_bank(model, shuffled), window) - base) <= 1e-5
    # Control bytes (1, 2, 3) never occur in the text; a prior of −80 makes the row negligible.
    never = torch.tensor([[1, 2, 3]])
    assert int(bank.lookup(never)[0]) == -1
    grown = TrigramBank(
        torch.cat([bank.trigrams, never]),
        torch.cat([bank.log_prior, torch.tensor([-80.0])]),
        bank.provenance,
    )
    assert abs(loss(swap_bank(model, grown), window) - base) <= 1e-6


@pytest.mark.parametrize("head", BANK_HEADS)
def test_T13_no_parameter_has_an_N_sized_axis(text, head):
    sizes = (300, 301)
    shapes = []
    for n in sizes:
        model = make(head, bank_from_bytes(text, n))
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        for name, t in tensors.items():
            assert n not in t.shape, f"{name} {tuple(t.shape)} has an axis of the bank size {n}"
        shapes.append({k: tuple(v.shape) for k, v in tensors.items()})
    assert shapes[0] == shapes[1]


def test_swap_bank_changes_no_parameter(text, bank):
    model = make("apmix", bank)
    other = bank_from_bytes(text[::-1].copy(), 256)
    swapped = swap_bank(model, other)
    assert swapped.bank.size == 256 and model.bank.size == 512
    sd, sw = model.state_dict(), swapped.state_dict()
    assert sd.keys() == sw.keys() and all(torch.equal(sd[k], sw[k]) for k in sd)
