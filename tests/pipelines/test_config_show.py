"""``geolip config show``: every key with its value and docstring; its YAML is ``--config`` input
that gives back the same config (and so the same hash)."""

from __future__ import annotations

import json

import pytest
from clierr import cli_error

from geolip.aleph.config import TrainConfig
from geolip.config import apply_overrides
from geolip.svae.config import SVAERunConfig, tiny_test
from pipelines.cli import main
from pipelines.config_file import apply_config
from pipelines.config_show import base_config, config_keys, field_docs
from pipelines.scales import get_scale


def _leaves(tree: dict, prefix: str = "") -> list[str]:
    """Dotted paths of a config's ``asdict`` leaves under its sections (not ``preset``)."""
    out = []
    for name, value in tree.items():
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{name}.")
        elif prefix:
            out.append(prefix + name)
    return out


def _show(capsys, *argv: str) -> str:
    assert main(["config", "show", *argv]) == 0
    return capsys.readouterr().out


def test_field_docs_are_the_strings_after_each_field() -> None:
    docs = field_docs(TrainConfig)
    assert docs["lr_final_frac"] == "Cosine decay to this fraction of lr over the run."
    assert docs["grad_clip"].startswith("task: clip norm max(mean task loss, 1) (spec); a number")
    assert "steps" not in docs  # a field without a string after it has none


def test_text_lists_every_key_with_its_value_and_docstring(capsys) -> None:
    out = _show(capsys, "--scale", "smoke", "--head", "apmix", "--set", "train.steps=9")
    run = apply_overrides(get_scale("smoke").run_config("apmix"), ["train.steps=9"])
    title, *lines = out.splitlines()
    assert title.endswith(f"config hash {run.hash()}") and "--scale smoke --head apmix" in title
    keys = config_keys(run)
    assert [line.split()[0] for line in lines] == [k.path for k in keys]
    assert [k.path for k in keys] == _leaves(run.to_dict()) and len(keys) == 46
    row = dict((line.split()[0], line) for line in lines)
    assert row["model.d_model"].split()[1:4] == ["64", "int", "Model"]
    assert "Model width d." in row["model.d_model"]
    assert row["model.head.kind"].split()[1] == "apmix"
    assert row["train.steps"].split()[1] == "9" and "[preset: 8]" in row["train.steps"]


@pytest.mark.parametrize(
    ("head", "sets"), [("kernel", []), ("pmix", ["model.tau=0.25", "train.grad_clip=1.5"])]
)
def test_yaml_is_config_input_for_the_same_config(tmp_path, capsys, head, sets) -> None:
    flags = ["--scale", "tiny", "--head", head]
    path = tmp_path / "run.yaml"
    path.write_text(
        _show(capsys, *flags, *[a for s in sets for a in ("--set", s)], "--format", "yaml")
    )
    assert path.read_text().startswith("# geolip train aleph --scale tiny")
    base = get_scale("tiny").run_config(head)
    expected = apply_overrides(base, sets)
    assert apply_config(base, str(path)) == expected
    # The file through config show itself: the same hash in its title.
    again = _show(capsys, *flags, "--config", str(path)).splitlines()[0]
    assert again.endswith(f"config hash {expected.hash()}")
    if sets:  # the file carries the overrides onto the preset (a string stays a string)
        assert expected.model.tau == 0.25 and expected.train.grad_clip == "1.5"


def test_svae_yaml_round_trips_and_json_lists_records(tmp_path, capsys) -> None:
    path = tmp_path / "svae.yaml"
    path.write_text(_show(capsys, "--family", "svae", "--preset", "tiny_test", "--format", "yaml"))
    cfg = SVAERunConfig(model=tiny_test())
    assert "patch_dim: null" in path.read_text()
    image = base_config("svae", None, None, "images:structured")
    assert apply_config(image, str(path)) == cfg != image
    out = json.loads(_show(capsys, "--family", "svae", "--format", "json"))
    records = {r["key"]: r for r in out["keys"]}
    assert set(records) == {k.path for k in config_keys(image)}
    assert records["model.V"] == {
        "key": "model.V",
        "value": 32,
        "type": "int",
        "doc": "Rows per frame.",
        "preset": 32,
    }
    assert records["model.patch_dim"]["type"] == "int | None"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--family", "svae", "--head", "pmix"], "--head is for --family aleph"),
        (
            ["--family", "svae", "--preset", "huge"],
            "unknown svae --preset 'huge'; presets: image16",
        ),
        (["--preset", "huge"], "unknown --scale 'huge'"),
        (["--data", "images:structured"], "--data is for --family svae"),
        (["--set", "train.nope=1"], "unknown key 'train.nope'"),
        (["--config", "nope.json"], "--config nope.json: no such file"),
    ],
)
def test_bad_flags_are_one_line(capsys, argv, needle) -> None:
    assert main(["config", "show", *argv]) == 2
    assert needle in cli_error(capsys)
