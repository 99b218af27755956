"""``--config FILE`` (pipelines.config_file): the same config as ``--set``, typed values, and one
line for every bad file, through the real command line. No Ray: configs are built, not run."""

from __future__ import annotations

import json

import pytest
from clierr import cli_error

from geolip.config import ConfigError, apply_overrides
from pipelines.cli import build_parser, load_commands, main
from pipelines.config_file import apply_config, config_changes, file_changes
from pipelines.scales import get_scale

SETS = ["train.steps=500", "train.lr=0.002", "model.head.kind=apmix", "model.head.use_prior=0"]
NESTED = {
    "train": {"steps": 500, "lr": 0.002},
    "model": {"head": {"kind": "apmix", "use_prior": False}},
}
DOTTED = {"train.steps": 500, "train.lr": 0.002, "model.head": {"kind": "apmix"}}
DOTTED["model.head.use_prior"] = False


def _base():
    return get_scale("tiny").run_config("pmix")


def _write(tmp_path, name: str, data) -> str:
    import yaml

    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data)
    elif name.endswith(".json"):
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data))
    return str(path)


def _job(tmp_path, *extra: str):
    """``geolip train aleph``'s job, parsed by the real parser (no Ray, no training)."""
    from pipelines.aleph.cli import job_from_args

    argv = ["train", "aleph", "--corpus", "builtin:tiny", "--data-dir", str(tmp_path / "d")]
    return job_from_args(build_parser(load_commands()).parse_args([*argv, *extra]))


@pytest.mark.parametrize("name", ["nested.yaml", "nested.json", "dotted.yml", "dotted.json"])
def test_a_file_gives_the_same_config_as_its_set_flags(tmp_path, name) -> None:
    path = _write(tmp_path, name, NESTED if name.startswith("nested") else DOTTED)
    expected = apply_overrides(_base(), SETS)
    assert apply_config(_base(), path) == expected
    assert expected.train.steps == 500 and expected.model.head.use_prior is False
    via_file = _job(tmp_path, "--config", path).run
    via_sets = _job(tmp_path, *[a for s in SETS for a in ("--set", s)]).run
    assert via_file.hash() == via_sets.hash() == expected.hash()
    assert via_file.hash() != _base().hash()


def test_set_wins_over_the_file(tmp_path) -> None:
    path = _write(tmp_path, "c.yaml", NESTED)
    run = _job(tmp_path, "--config", path, "--set", "train.steps=7").run
    assert run.train.steps == 7 and run.train.lr == 0.002 and run.head == "apmix"
    changes = config_changes(_base(), path, ["train.steps=7"])
    assert changes[-1] == ("train.steps", 7) and ("train.steps", 500) in changes


def test_numbers_are_typed_as_their_fields(tmp_path) -> None:
    # A whole number for a float field is that float (as --set gives): the same hash.
    path = _write(tmp_path, "c.yaml", "train:\n  lr: 1\nmodel:\n  tau: 2e-1\n")
    run = apply_config(_base(), path)
    assert run == apply_overrides(_base(), ["train.lr=1", "model.tau=0.2"])
    assert isinstance(run.train.lr, float) and run.model.tau == 0.2  # YAML 1.1 reads 2e-1 a string


def test_yaml_booleans_are_true_and_false_only(tmp_path) -> None:
    # YAML 1.1 would read `off` as False, which train.amp (a string: auto|off|bf16|fp16) refuses.
    path = _write(tmp_path, "c.yaml", "train: {amp: off}\nmodel: {head: {use_prior: FALSE}}\n")
    run = apply_config(_base(), path)
    assert run.train.amp == "off" and run.model.head.use_prior is False
    assert run == apply_overrides(_base(), ["train.amp=off", "model.head.use_prior=false"])


def test_a_files_values_are_validated_together(tmp_path) -> None:
    # tiny is d_model 64 with 2 heads; 3 heads alone would not divide 64, with d_model 96 they do.
    path = _write(tmp_path, "c.yaml", "model:\n  n_heads: 3\n  d_model: 96\n")
    run = apply_config(_base(), path)
    assert (run.model.n_heads, run.model.d_model) == (3, 96)
    with pytest.raises(ConfigError, match="divisible"):
        apply_overrides(_base(), ["model.n_heads=3", "model.d_model=96"])


def test_an_empty_yaml_file_changes_nothing(tmp_path) -> None:
    path = _write(tmp_path, "c.yaml", "# nothing yet\n")
    assert file_changes(_base(), path) == () and apply_config(_base(), path) == _base()


BAD = [
    ("missing.yaml", None, "no such file"),
    ("c.toml", "x = 1\n", "expected a .yaml, .yml or .json file, got .toml"),
    ("c.yaml", "train: [steps: 1\n", "not valid YAML (line 2"),
    ("c.json", '{"train": {"steps": 1,}}', "not valid JSON (line 1"),
    ("c.yaml", "- train.steps: 1\n", "the top level is a list"),
    ("c.json", "3", "the top level is 3 (a whole number)"),
    ("c.yaml", "train: {stepz: 1}\n", "unknown key 'train.stepz'; known: ['steps'"),
    ("c.yaml", "model.head.nope: 1\n", "unknown key 'model.head.nope'; known: ['kind'"),
    ("c.yaml", "preset: tiny\n", "unknown key 'preset'; known sections: ['model', 'train']"),
    ("c.yaml", "train.steps.x: 1\n", "unknown key 'train.steps.x': train.steps has no keys"),
    ("c.yaml", "train: {steps: abc}\n", "train.steps: expected a whole number, got 'abc'"),
    ("c.yaml", "train: {steps: 1.5}\n", "train.steps: expected a whole number, got 1.5"),
    ("c.yaml", "train: {steps: true}\n", "train.steps: expected a whole number, got True"),
    ("c.json", '{"train.steps": "500"}', "train.steps: expected a whole number, got '500'"),
    ("c.yaml", "train: {lr: [1, 2]}\n", "train.lr: expected a finite number, got a list"),
    ("c.yaml", "train: {lr: .inf}\n", "train.lr: expected a finite number, got inf"),
    ("c.yaml", "model: {tau: {a: 1}}\n", "model.tau: expected a finite number, got a mapping"),
    ("c.yaml", "model: {head: {use_prior: 1}}\n", "model.head.use_prior: expected true or false"),
    ("c.yaml", "model: {head: {use_prior: yes}}\n", "expected true or false, got 'yes'"),
    ("c.yaml", "train: {grad_clip: 1.0}\n", "expected a string, got 1.0 (a number); quote it"),
    ("c.yaml", "model: {head: pmix}\n", "model.head is a group; expected a mapping of its keys"),
    ("c.yaml", "train: {steps: 0}\n", "train.steps must be >= 1, got 0"),
    ("c.yaml", "train: {steps: 1}\ntrain: {lr: 1}\n", "key 'train' is given twice"),
    ("c.json", '{"train": {"steps": 1}, "train.steps": 2}', "train.steps is given twice"),
]


@pytest.mark.parametrize(("name", "text", "needle"), BAD)
def test_a_bad_file_is_one_line_naming_it(tmp_path, capsys, name, text, needle) -> None:
    path = str(tmp_path / name) if text is None else _write(tmp_path, name, text)
    argv = ["train", "aleph", "--corpus", "builtin:tiny", "--data-dir", str(tmp_path / "d")]
    assert main([*argv, "--config", path]) == 2
    err = cli_error(capsys)
    assert f"--config {path}: " in err and needle in err, err
    assert not (tmp_path / "d" / "ray_results").exists()


def test_svae_and_sweep_read_the_file_too(tmp_path, capsys) -> None:
    bad = _write(tmp_path, "c.yaml", "model: {V: sixteen}\n")
    argv = ["train", "svae", "--data", "images:structured", "--data-dir", str(tmp_path / "d")]
    assert main([*argv, "--config", bad]) == 2
    assert "model.V: expected a whole number, got 'sixteen'" in cli_error(capsys)
    path = _write(tmp_path, "s.yaml", {"model": {"head": {"n_pointers": 8}}})
    sweep = ["sweep", "ladder", "--dry-run", "--scale", "smoke", "--data-dir", str(tmp_path / "s")]
    assert main([*sweep, "--config", path]) == 0
    assert "model.head.n_pointers=8" in capsys.readouterr().out
