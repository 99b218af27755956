"""AlephLM's grouped config: the head and codebook groups, and configs and checkpoints written
with the former flat keys (``model.head="pmix"``, ``model.n_pointers``, ...), which still load."""

from __future__ import annotations

import json

import pytest
import torch

from geolip.aleph.bank import bank_from_bytes
from geolip.aleph.checkpoint import load_checkpoint, save_checkpoint
from geolip.aleph.config import LEGACY_KEYS, AlephRunConfig
from geolip.aleph.heads import build_head
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from geolip.config import apply_changes

FLAT = {
    "head": "apmix",
    "n_pointers": 8,
    "apmix_mode": "free",
    "apmix_scale_init": 10.0,
    "preservation": "div",
    "div_weight": 0.03,
    "codebook_sharing": "layer",
    "kernel_tau_init": 0.2,
    "d_pointer": 32,
}


def _flat(run: AlephRunConfig) -> dict:
    """``run.to_dict()`` as an older geolip wrote it: head and codebook fields flat."""
    d = run.to_dict()
    model = {k: v for k, v in d["model"].items() if k not in ("head", "codebook")}
    for flat, path in LEGACY_KEYS.items():
        value = d["model"]
        for name in path.split("."):
            value = value[name]
        model[flat] = value
    return {**d, "model": model}


def test_legacy_flat_keys_load_into_their_groups() -> None:
    d = tiny().to_dict()
    d["model"] = {k: v for k, v in d["model"].items() if k not in ("head", "codebook")} | FLAT
    run = AlephRunConfig.from_dict(d)
    head, book = run.model.head, run.model.codebook
    assert head.kind == "apmix" and head.n_pointers == 8 and head.apmix.mode == "free"
    assert head.apmix.scale_init == 10.0 and head.kernel.tau_init == 0.2
    assert head.pmix.d_pointer == 32
    assert book.preservation == "div" and book.div_weight == 0.03 and book.sharing == "layer"
    assert run.head == "apmix"


def test_every_legacy_key_round_trips() -> None:
    run = apply_changes(with_head(tiny(), "pmix"), {"model.head.n_pointers": 8})
    assert AlephRunConfig.from_dict(_flat(run)) == run


def test_a_checkpoint_with_a_flat_config_loads(tmp_path) -> None:
    run = with_head(tiny(), "pmix")
    torch.manual_seed(0)
    model = AlephLM(run.model, bank_from_bytes(b"the cat sat on the mat " * 40, 64))
    path = save_checkpoint(tmp_path / "ck", model, run)
    (path / "config.json").write_text(json.dumps(_flat(run)))
    loaded, loaded_run, _ = load_checkpoint(path)
    assert loaded_run == run
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_build_head_reads_its_group_from_the_config() -> None:
    """One argument: the head takes its fields from ``cfg.head`` (no hand-passed positionals)."""
    with pytest.raises(ValueError, match="no bank head for model.head.kind='byte'"):
        build_head(with_head(tiny(), "byte").model)
    for kind in ("kernel", "pmix", "apmix"):
        cfg = apply_changes(with_head(tiny(), kind), {"model.head.n_pointers": 2}).model
        head = build_head(cfg)
        assert type(head).__name__.lower().startswith(kind[:4])
