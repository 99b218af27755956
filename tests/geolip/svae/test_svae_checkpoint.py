"""SVAE companion checkpoints (safetensors + JSON): round trip, every corruption as one line, the
family check both ways, and directories of the old layout."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from geolip.aleph.bank import bank_from_bytes
from geolip.aleph.checkpoint import load_checkpoint, save_checkpoint
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from geolip.checkpoint_io import CheckpointError, checkpoint_family
from geolip.svae.checkpoint import FORMAT, load_svae_checkpoint, save_svae_checkpoint
from geolip.svae.config import GeoConfig, tiny_test
from geolip.svae.model import SVAECompanion

VERDICT = {"recon_cos_external": 0.91, "mechanism": "A", "data": "images:structured"}


def _model(seed: int = 3) -> SVAECompanion:
    model = SVAECompanion(dataclasses.replace(tiny_test(), seed=seed))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))  # weights that are not just the init
    return model


@pytest.fixture
def saved(tmp_path):
    model = _model()
    extra = {"verdict.json": VERDICT, "host_config.json": {"kind": "images"}}
    path = save_svae_checkpoint(
        tmp_path / "ck", model, model.cfg, meta={"step": 7}, extra_json=extra
    )
    return path, model


def _edit(path, name, change):
    data = json.loads((path / name).read_text())
    change(data)
    (path / name).write_text(json.dumps(data))


def test_round_trip_is_bit_exact(saved):
    path, model = saved
    loaded, geo, meta = load_svae_checkpoint(path)
    assert geo == model.cfg and not loaded.training
    assert meta["format"] == FORMAT and meta["family"] == "svae" and meta["step"] == 7
    assert meta["config_hash"] == geo.config_hash()
    assert meta["param_count"] == sum(p.numel() for p in model.parameters())
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert sd[k].dtype == sd2[k].dtype and torch.equal(sd[k], sd2[k]), k
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a["external_patches"], b["external_patches"])
    names = sorted(p.name for p in path.iterdir())
    assert names == [
        "config.json",
        "host_config.json",
        "meta.json",
        "model.safetensors",
        "verdict.json",
    ]
    assert json.loads((path / "verdict.json").read_text()) == VERDICT
    assert json.loads((path / "config.json").read_text()) == model.cfg.to_dict()
    assert checkpoint_family(path) == "svae"


def test_refuses_to_overwrite_and_leaves_no_temp_dirs(saved):
    path, _ = saved
    before = (path / "model.safetensors").read_bytes()
    other = _model(seed=9)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_svae_checkpoint(path, other, other.cfg)
    assert (path / "model.safetensors").read_bytes() == before
    save_svae_checkpoint(path, other, other.cfg, overwrite=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ck"]
    assert not (path / "verdict.json").exists()  # replaced as a whole, not merged
    assert load_svae_checkpoint(path)[1].seed == 9


def test_failed_save_leaves_nothing_behind(tmp_path):
    model = _model()
    with pytest.raises(TypeError):
        save_svae_checkpoint(tmp_path / "ck", model, model.cfg, meta={"bad": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["config.json", "meta.json", "sub/x.json", "notes.txt"])
def test_extra_json_names_are_checked(tmp_path, name):
    model = _model()
    with pytest.raises(ValueError, match=r"plain \*\.json name"):
        save_svae_checkpoint(tmp_path / "ck", model, model.cfg, extra_json={name: {}})


def test_config_must_be_the_models(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="not the config the model was built from"):
        save_svae_checkpoint(tmp_path / "ck", model, dataclasses.replace(model.cfg, seed=1))


def _remove(name):
    return lambda path: (path / name).unlink()


def _write(name, text):
    return lambda path: (path / name).write_bytes(
        text if isinstance(text, bytes) else text.encode()
    )


def _truncate(path):
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _drop_key(path):
    f = path / "model.safetensors"
    state = load_file(str(f))
    del state["codebook"]
    save_file(state, str(f))


def _wider(path):
    """A config whose shapes no longer fit the weights, re-stamped so the load gets that far."""
    _edit(path, "config.json", lambda c: c.update(hidden=32))
    wider = GeoConfig.from_dict(json.loads((path / "config.json").read_text()))
    _edit(path, "meta.json", lambda m: m.update(config_hash=wider.config_hash()))


CORRUPTIONS = {
    "meta-missing": (_remove("meta.json"), r"meta\.json is missing"),
    "meta-not-json": (_write("meta.json", "{no"), r"meta\.json is not valid JSON"),
    "meta-array": (
        _write("meta.json", "[1]"),
        r"meta\.json holds a JSON array; expected a JSON object",
    ),
    "meta-not-utf8": (_write("meta.json", b"\xff{}"), r"meta\.json is not UTF-8 text \(byte 0xff"),
    "meta-wrong-format": (
        lambda p: _edit(p, "meta.json", lambda m: m.update(format="geolip-svae-checkpoint/9")),
        "expected format 'geolip-svae-checkpoint/1', got 'geolip-svae-checkpoint/9'",
    ),
    "meta-unknown-family": (
        lambda p: _edit(p, "meta.json", lambda m: m.update(family="gpt")),
        "unknown checkpoint family 'gpt'",
    ),
    "config-missing": (_remove("config.json"), r"config\.json is missing"),
    "config-null": (_write("config.json", "null"), r"config\.json holds a JSON null"),
    "config-unknown-key": (
        lambda p: _edit(p, "config.json", lambda c: c.update(V_rows=3)),
        r"does not describe a valid model: unknown geo config keys \['V_rows'\]",
    ),
    "config-bad-value": (
        lambda p: _edit(p, "config.json", lambda c: c.update(V="x")),
        "does not describe a valid model",
    ),
    "config-edited": (
        lambda p: _edit(p, "config.json", lambda c: c.update(cc_temp=0.2)),
        "changed after saving",
    ),
    "weights-missing": (_remove("model.safetensors"), "model.safetensors are missing"),
    "weights-corrupt": (_truncate, "model.safetensors are corrupt"),
    "weights-missing-key": (_drop_key, r"missing \['codebook'\]"),
    "weights-wrong-shape": (_wider, "shape of .* the config expects"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corruption_is_one_line(saved, case):
    path, _ = saved
    setup, message = CORRUPTIONS[case]
    setup(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_svae_checkpoint(path)
    assert "\n" not in str(info.value)


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_svae_checkpoint(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a directory"):
        load_svae_checkpoint(tmp_path / "file")


@pytest.fixture
def aleph_checkpoint(tmp_path):
    run_cfg = with_head(tiny(), "pmix")
    torch.manual_seed(0)
    bank = bank_from_bytes(b"the cat sat on the mat and the dog sat on the log " * 20, 64)
    return save_checkpoint(tmp_path / "aleph", AlephLM(run_cfg.model, bank), run_cfg)


def test_wrong_family_is_one_line_both_ways(saved, aleph_checkpoint):
    path, _ = saved
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"checkpoint {path} is an SVAE companion checkpoint (meta.json family 'svae'); this "
        "command needs an AlephLM checkpoint"
    )
    with pytest.raises(CheckpointError) as info:
        load_svae_checkpoint(aleph_checkpoint)
    assert str(info.value) == (
        f"checkpoint {aleph_checkpoint} is an AlephLM checkpoint (meta.json family 'aleph'); "
        "this command needs an SVAE companion checkpoint"
    )
    assert checkpoint_family(aleph_checkpoint) == "aleph"


def test_aleph_checkpoint_without_family_still_loads(aleph_checkpoint):
    """Written before meta.json named its family: the format tells."""
    _edit(aleph_checkpoint, "meta.json", lambda m: m.pop("family"))
    assert checkpoint_family(aleph_checkpoint) == "aleph"
    assert load_checkpoint(aleph_checkpoint)[2]["format"] == "geolip-aleph-checkpoint/1"
    with pytest.raises(CheckpointError, match=r"AlephLM checkpoint \(meta.json format "):
        load_svae_checkpoint(aleph_checkpoint)


@pytest.mark.parametrize("meta", [None, {"step": 5, "prefix": ""}])
def test_old_layout_loads_and_is_svae(saved, meta):
    """An SVAE run of the old layout: geo_config.json and no meta.json (final checkpoints) or a
    meta.json without a format (Ray Train's per-step ones)."""
    path, model = saved
    (path / "config.json").rename(path / "geo_config.json")
    (path / "meta.json").unlink()
    if meta is not None:
        (path / "meta.json").write_text(json.dumps(meta))
    assert checkpoint_family(path) == "svae"
    loaded, geo, got = load_svae_checkpoint(path)
    assert geo == model.cfg and got == (meta or {})
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="is an SVAE companion checkpoint .*geo_config.json"):
        load_checkpoint(path)


def test_family_of_a_directory_that_is_no_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"meta\.json is missing"):
        checkpoint_family(tmp_path / "empty")
    (tmp_path / "empty" / "meta.json").write_text('{"step": 3}')
    with pytest.raises(CheckpointError, match="names no checkpoint family and an unknown format"):
        checkpoint_family(tmp_path / "empty")
