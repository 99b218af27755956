"""Preservation arms (spec §11.1; test T18)."""

from __future__ import annotations

import pytest
import torch

from geolip.aleph.experiments.preservation import ARMS, arm_config
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from geolip.aleph.train import build_optimizer, build_scheduler, train_step
from geolip.config import ConfigError
from geolip.geometry.spread import random_codebook


def make(arm: str, bank, head: str = "kernel") -> tuple[AlephLM, object]:
    run = with_head(tiny(), head)
    torch.manual_seed(0)
    return AlephLM(arm_config(run.model, arm), bank), run.train


EXPECTED = {
    "free": ("free", {}),
    "div_0.003": ("div", {"div_weight": 0.003}),
    "div_0.01": ("div", {"div_weight": 0.01}),
    "div_0.03": ("div", {"div_weight": 0.03}),
    "frozen": ("frozen", {}),
    "slowlane": ("slowlane", {"slowlane_mult": 0.1}),
    "slowlane_0.01": ("slowlane", {"slowlane_mult": 0.01}),
    "spread": ("spread", {}),
    "frozen_random": ("frozen_random", {}),
}


@pytest.mark.parametrize("arm", sorted(EXPECTED))
def test_arm_config_sets_the_codebook_treatment(arm):
    base = tiny().model
    cfg = arm_config(base, arm)
    preservation, fields = EXPECTED[arm]
    assert cfg.codebook.preservation == preservation
    for name, value in fields.items():
        assert getattr(cfg.codebook, name) == value
    assert cfg.d_model == base.d_model and cfg.head == base.head


def test_arm_names_and_alias():
    assert set(ARMS) == set(EXPECTED)
    assert arm_config(tiny().model, "frozen-random").codebook.preservation == "frozen_random"


def test_unknown_arm_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="valid arms") as exc:
        arm_config(tiny().model, "thawed")
    assert "slowlane_0.01" in str(exc.value) and "div_0.003" in str(exc.value)


def test_T18_frozen_codebook_bit_identical_after_steps(bank, window):
    model, tc = make("frozen", bank)
    book = model.codebooks[0]
    assert not book.trainable
    before, emb = book.A_raw.clone(), model.embed.pos.detach().clone()
    opt = build_optimizer(model, tc)
    assert [g["name"] for g in opt.param_groups] == ["main"], "a frozen codebook has no group"
    sched = build_scheduler(opt, tc)
    for step in range(3):
        train_step(model, opt, sched, [window], tc, step)
    assert torch.equal(book.A_raw, before)
    assert not torch.equal(model.embed.pos, emb), "the rest of the model did train"


def test_frozen_random_arm_holds_the_seeded_control(bank):
    model, _ = make("frozen_random", bank)
    book = model.codebooks[0]
    assert not book.trainable
    assert torch.equal(book.A_raw, random_codebook(model.cfg.K, model.cfg.D, 0))


@pytest.mark.parametrize(("arm", "mult"), [("slowlane", 0.1), ("slowlane_0.01", 0.01)])
def test_T18_slowlane_update_norm_ratio(bank, window, arm, mult):
    # Adam's first step is lr·g/(|g|+ε) elementwise, so with the same gradient the update norms
    # differ by exactly the learning-rate ratio.
    updates = {}
    for name in ("free", arm):
        model, tc = make(name, bank)
        opt = build_optimizer(model, tc)
        groups = {g["name"]: g for g in opt.param_groups}
        assert groups["codebook"]["lr_mult"] == (1.0 if name == "free" else mult)
        before = model.codebooks[0].A_raw.detach().clone()
        train_step(model, opt, build_scheduler(opt, tc), [window], tc, 0)
        updates[name] = (model.codebooks[0].A_raw.detach() - before).norm().item()
    assert updates["free"] > 0
    ratio = updates[arm] / updates["free"]
    assert abs(ratio / mult - 1) < 0.05, f"{arm}: update ratio {ratio:.4g}, expected {mult}"
