"""``geolip export`` through the real CLI: both families' folders, loading them back with geolip
and without it, and every bad CKPT or DIR as one line that writes nothing."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys

import pytest
import torch
from clierr import cli_error
from safetensors.torch import save_file

from geolip.aleph.bank import bank_from_bytes
from geolip.aleph.checkpoint import load_checkpoint, save_checkpoint
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from geolip.svae.checkpoint import load_svae_checkpoint, save_svae_checkpoint
from geolip.svae.config import tiny_test
from geolip.svae.model import SVAECompanion
from pipelines.cli import main

ALEPH_VERDICT = {"run": "r1", "final": {"val_bpb": 2.5, "heldout_bpb_streamed": 2.25}}
SVAE_VERDICT = {"recon_cos_external": 0.875, "mechanism": "A", "data": "images:structured"}


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def _aleph(tmp_path):
    """A tiny pmix run's final checkpoint, its verdict.json beside it (the run directory)."""
    run_cfg = with_head(tiny(), "pmix")
    torch.manual_seed(0)
    bank = bank_from_bytes(b"the cat sat on the mat and the dog sat on the log " * 20, 64)
    model = _perturbed(AlephLM(run_cfg.model, bank))
    run = tmp_path / "runs" / "aleph" / "r1"
    path = save_checkpoint(run / "final", model, run_cfg, meta={"run_name": "r1", "step": 4})
    (run / "verdict.json").write_text(json.dumps(ALEPH_VERDICT))
    return path, model


def _svae(tmp_path):
    model = _perturbed(SVAECompanion(dataclasses.replace(tiny_test(), seed=2)))
    extra = {"verdict.json": SVAE_VERDICT, "host_config.json": {"kind": "images"}}
    meta = {"data": "images:structured", "steps": 30}
    path = save_svae_checkpoint(tmp_path / "svae", model, model.cfg, meta=meta, extra_json=extra)
    return path, model


MAKERS = {"aleph": _aleph, "svae": _svae}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_export_aleph_checkpoint(tmp_path, capsys):
    ck, model = _aleph(tmp_path)
    out = tmp_path / "out" / "aleph-r1"
    assert main(["export", str(ck), str(out)]) == 0
    assert f"-> {out}" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "README.md",
        "bank.safetensors",
        "config.json",
        "meta.json",
        "model.safetensors",
        "verdict.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "geolip-aleph" and config["architectures"] == ["AlephLM"]
    assert config["format"] == "geolip-aleph-checkpoint/1" and config["geolip_version"]
    loaded, run_cfg, meta = load_checkpoint(out)
    assert _same_weights(loaded, model) and meta["family"] == "aleph" and meta["step"] == 4
    assert loaded.bank.fingerprint() == model.bank.fingerprint()
    assert json.loads((out / "verdict.json").read_text()) == ALEPH_VERDICT
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: geolip\nlicense: unknown\ntags:\n")
    for text in ("# r1", "| head | pmix |", "| K / D | ", "| model.head.kind | pmix |"):
        assert text in card, text
    assert "| final.val_bpb (verdict.json) | 2.5 |" in card
    assert "records no corpus or data source" in card  # meta says nothing of it: none claimed
    assert 'load_checkpoint("aleph-r1")' in card
    assert f"| parameters | {sum(p.numel() for p in model.parameters()):,} |" in card
    assert sorted(p.name for p in out.parent.iterdir()) == ["aleph-r1"]  # no temporary left


def test_export_svae_checkpoint(tmp_path):
    ck, model = _svae(tmp_path)
    out = tmp_path / "svae-export"
    assert main(["export", str(ck), str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "README.md",
        "config.json",
        "host_config.json",
        "meta.json",
        "model.safetensors",
        "verdict.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "geolip-svae" and config["architectures"] == ["SVAECompanion"]
    loaded, geo, meta = load_svae_checkpoint(out)
    assert geo == model.cfg and _same_weights(loaded, model) and meta["steps"] == 30
    card = (out / "README.md").read_text()
    assert "| data | images:structured |" in card and "| host_config.kind | images |" in card
    assert "| recon_cos_external (verdict.json) | 0.875 |" in card
    assert "records no corpus" not in card
    assert 'load_svae_checkpoint("svae-export")' in card


def test_export_of_an_old_svae_run_loads_with_its_hash(tmp_path):
    """An SVAE directory of the old layout (geo_config.json, no meta.json) exports to the new."""
    ck, model = _svae(tmp_path)
    (ck / "config.json").rename(ck / "geo_config.json")
    (ck / "meta.json").unlink()
    out = tmp_path / "upgraded"
    assert main(["export", str(ck), str(out)]) == 0
    loaded, geo, meta = load_svae_checkpoint(out)
    assert meta["format"] == "geolip-svae-checkpoint/1" and meta["config_hash"] == geo.config_hash()
    assert _same_weights(loaded, model)


CHILD = """
import sys
sys.modules["geolip"] = None  # the folder must read without geolip: importing it fails here
try:
    import geolip
except ImportError:
    pass
else:
    raise SystemExit("geolip was importable")
import torch
from safetensors.torch import load_file
exec(SNIPPET)
reference = load_file(REFERENCE)
assert weights.keys() == reference.keys(), sorted(weights.keys() ^ reference.keys())
for k, v in reference.items():
    assert weights[k].dtype == v.dtype and torch.equal(weights[k], v), k
assert config["model_type"] == MODEL_TYPE and meta["family"] == FAMILY
print("compared", len(reference))
"""


@pytest.mark.parametrize("family", ["aleph", "svae"])
def test_exported_folder_loads_without_geolip(tmp_path, family):
    """The model card's own no-geolip snippet, run in a fresh interpreter where geolip cannot
    be imported, reads weights equal to the original model's state_dict."""
    ck, model = MAKERS[family](tmp_path)
    out = tmp_path / "exported"
    assert main(["export", str(ck), str(out)]) == 0
    reference = tmp_path / "reference.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(reference))
    card = (out / "README.md").read_text()
    snippet = re.search(r"Without geolip.*?```python\n(.*?)```", card, re.S).group(1)
    assert len(snippet.strip().splitlines()) <= 6
    values = {
        "SNIPPET": snippet,
        "REFERENCE": str(reference),
        "MODEL_TYPE": f"geolip-{family}",
        "FAMILY": family,
    }
    script = "".join(f"{k} = {v!r}\n" for k, v in values.items()) + CHILD
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"compared {len(model.state_dict())}"


def test_existing_dir_is_refused_without_overwrite(tmp_path, capsys):
    ck, model = _svae(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(ck), str(out)]) == 2
    assert cli_error(capsys) == (
        f"geolip: error: DIR {out} already exists; pass --overwrite to replace it"
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["export", str(ck), str(out), "--overwrite"]) == 0
    assert not (out / "keep.txt").exists()
    assert _same_weights(load_svae_checkpoint(out)[0], model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "svae"]


def _corrupt_meta(ck):
    (ck / "meta.json").write_text("{no")


BAD = {
    "missing": (lambda tmp: tmp / "nope", "checkpoint {ck} does not exist"),
    "a-file": (
        lambda tmp: (tmp / "notes.txt", (tmp / "notes.txt").write_text("x"))[0],
        "checkpoint {ck} is a file, not a directory",
    ),
    "not-a-checkpoint": (
        lambda tmp: (tmp / "empty", (tmp / "empty").mkdir())[0],
        "checkpoint file {ck}/meta.json is missing",
    ),
    "corrupt-meta": (
        lambda tmp: (_svae(tmp)[0], _corrupt_meta(tmp / "svae"))[0],
        "checkpoint file {ck}/meta.json is not valid JSON",
    ),
    "uri": (
        lambda tmp: "runs:/0123abcd/checkpoint",
        "CKPT runs:/0123abcd/checkpoint: no MLflow run '0123abcd'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_ckpt_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    make, expected = BAD[case]
    ck = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["export", str(ck), str(tmp_path / "out")]) == 2
    assert cli_error(capsys).startswith(f"geolip: error: {expected.format(ck=ck)}")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_dir_that_holds_the_checkpoint_is_refused(tmp_path, capsys):
    ck, _ = _aleph(tmp_path)
    for target in (ck, ck.parent):
        assert main(["export", str(ck), str(target), "--overwrite"]) == 2
        assert "is or contains the checkpoint" in cli_error(capsys)
    assert load_checkpoint(ck)[2]["step"] == 4


def test_an_svae_checkpoint_given_to_an_aleph_command_is_one_line(tmp_path, capsys):
    ck, _ = _svae(tmp_path)
    assert main(["aleph", "sample", "--checkpoint", str(ck), "--bytes", "3"]) == 2
    assert cli_error(capsys).endswith(
        f"checkpoint {ck} is an SVAE companion checkpoint (meta.json family 'svae'); this "
        "command needs an AlephLM checkpoint"
    )
