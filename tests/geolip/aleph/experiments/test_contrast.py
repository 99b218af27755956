"""Controller contrast and codebook symmetries (spec §1.4, §10; tests T8, T16)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import make, nll

from geolip.aleph.experiments.contrast import (
    AblationError,
    ablate,
    codebook_transform,
    controller_contrast,
    haar_orthogonal,
    joint_rotate,
    rotate,
)
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from geolip.aleph.train import build_optimizer, build_scheduler, train_step


@pytest.mark.parametrize("sharing", ["all", "layer"])
def test_T8_symmetries_leave_routing_only_logits_unchanged(bank, batches, sharing):
    model = make("byte", bank, codebook__sharing=sharing)
    w = batches[0]
    base = nll(model, w)
    R = haar_orthogonal(4, torch.Generator().manual_seed(7)).float()
    for name, twin in [
        ("permute", ablate(model, "permute", seed=3)),
        ("signflip", ablate(model, "signflip", seed=3)),
        ("joint_rotate", joint_rotate(model, R)),
    ]:
        err = (nll(twin, w) - base).abs().max().item()
        assert err <= 1e-5, f"{name} ({sharing}) is an exact symmetry, got max |ΔNLL| {err:.2e}"
    # Rotating A alone (W_q, W_k held fixed) is an ablation, not a symmetry (§1.4).
    assert (nll(rotate(model, seed=3), w) - base).abs().max().item() > 1e-4


@pytest.mark.parametrize("head", ["kernel", "pmix", "apmix", "apmix_free"])
def test_T8_joint_rotation_is_a_symmetry_of_every_head(bank, batches, head):
    model = make(head, bank)
    w = batches[0]
    R = haar_orthogonal(4, torch.Generator().manual_seed(11)).float()
    twin = joint_rotate(model, R)
    assert not torch.equal(twin.codebooks[0].A_raw, model.codebooks[0].A_raw)
    err = (nll(twin, w) - nll(model, w)).abs().max().item()
    assert err <= 1e-5, f"joint rotation changed the {head} NLL by {err:.2e}"


@pytest.mark.parametrize("head", ["pmix", "apmix"])
def test_T16_permute_zero_on_index_free_models(bank, batches, head):
    model = make(head, bank)
    rep = controller_contrast(model, batches, ops=("permute", "signflip"), seeds=(0, 1))
    for row in rep.rows():
        assert max(abs(d) for d in row["deltas"]) <= 1e-5, row


def test_T16_randomize_changes_index_free_routing(bank, batches):
    rep = controller_contrast(make("pmix", bank), batches, ops=("randomize",), seeds=(0, 1))
    assert all(abs(d) > 1e-5 for d in rep.rows()[0]["deltas"]), rep.as_markdown()


def test_T16_permute_positive_on_kernel(bank, batches):
    # Untrained, permuting the codebook is just another random init (Δ of either sign); after a
    # few steps π and the per-axis emission keys U are aligned and any permutation breaks them.
    run = with_head(tiny(), "kernel")
    tc = dataclasses.replace(run.train, lr=3e-2, steps=8)
    torch.manual_seed(0)
    model = AlephLM(run.model, bank)
    opt = build_optimizer(model, tc)
    sched = build_scheduler(opt, tc)
    for step in range(tc.steps):
        train_step(model, opt, sched, [batches[0]], tc, step)
    rep = controller_contrast(model, batches, ops=("permute",), seeds=(0, 1, 2))
    assert min(rep.rows()[0]["deltas"]) > 0.05, rep.as_markdown()


def test_scopes_route_the_ablation_to_hubs_or_head(bank):
    model = make("kernel", bank)
    A = model.codebooks[0].A_raw
    permuted = codebook_transform("permute", model.cfg.K, model.cfg.D, 5)(A)
    routing = ablate(model, "permute", seed=5, scope="routing")
    assert torch.equal(routing.codebooks[0].A_raw, permuted)
    assert torch.equal(routing.head_codebook().A_raw, A)
    head = ablate(model, "permute", seed=5, scope="head")
    assert torch.equal(head.codebooks[0].A_raw, A)
    assert torch.equal(head.head_codebook().A_raw, permuted)
    assert torch.equal(model.codebooks[0].A_raw, A), "the original model must be untouched"
    assert model.head_codebook_override is None


def test_layer_codebooks_share_one_permutation(bank):
    model = make("byte", bank, codebook__sharing="layer")
    fn = codebook_transform("permute", model.cfg.K, model.cfg.D, 2)
    out = ablate(model, "permute", seed=2)
    for before, after in zip(model.codebooks, out.codebooks):
        assert torch.equal(after.A_raw, fn(before.A_raw))


def test_head_scope_leaves_pmix_bitwise_unchanged(bank, batches):
    model = make("pmix", bank)
    rep = controller_contrast(model, batches, ops=("randomize",), seeds=(0,), scope="head")
    assert rep.delta("randomize") == 0.0


def test_report_rows_and_markdown(bank, batches):
    model = make("byte", bank).train()
    rep = controller_contrast(model, batches, ops=("permute", "rotate"), seeds=(0, 1))
    assert model.training, "the caller's train/eval mode is restored"
    rows = rep.rows()
    assert [r["op"] for r in rows] == ["permute", "rotate"]
    assert {"base_bpb", "delta_bpb_mean", "delta_bpb_std", "n_seeds", "scope"} <= set(rows[0])
    assert rows[1]["n_seeds"] == 2 and rows[1]["delta_bpb_std"] >= 0
    md = rep.as_markdown()
    assert "| permute |" in md and "| rotate |" in md


def test_bad_ablation_inputs(bank, batches):
    model = make("byte", bank)
    with pytest.raises(AblationError, match="valid ops"):
        ablate(model, "shuffle")
    with pytest.raises(AblationError, match="valid ops"):
        controller_contrast(model, batches, ops=("permute", "scramble"))
    with pytest.raises(AblationError, match="valid scopes"):
        ablate(model, "permute", scope="hubs")
    with pytest.raises(AblationError, match="orthogonal"):
        joint_rotate(model, 2 * torch.eye(4))
    with pytest.raises(AblationError, match="shape"):
        joint_rotate(model, torch.eye(3))
