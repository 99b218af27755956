"""The shared config machinery (``geolip.config``): typed dotted-path changes, ``--set`` parsing,
diffs and nested building, on AlephLM's and the SVAE's run configs."""

from __future__ import annotations

import dataclasses

import pytest

from geolip.aleph.config import AlephRunConfig
from geolip.aleph.presets import tiny
from geolip.config import (
    ConfigError,
    apply_changes,
    build,
    config_diff,
    config_hash,
    get_at,
    parse_overrides,
    replace_at,
)
from geolip.svae.config import SVAERunConfig


def test_set_parses_nested_paths_by_the_fields_type() -> None:
    run = tiny()
    changes = parse_overrides(
        run,
        [
            "model.head.n_pointers=8",
            "model.head.apmix.mode=free",
            "model.codebook.preservation=spread",
            "model.tau=0.05",
            "train.steps=40",
            "model.head.use_prior=false",
        ],
    )
    assert changes == (
        ("model.head.n_pointers", 8),
        ("model.head.apmix.mode", "free"),
        ("model.codebook.preservation", "spread"),
        ("model.tau", 0.05),
        ("train.steps", 40),
        ("model.head.use_prior", False),
    )
    out = apply_changes(run, changes)
    assert get_at(out, "model.head.apmix.mode") == "free" and out.train.steps == 40
    assert set(config_diff(run, out)) == {k for k, _ in changes}


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("model.head.nope=1", "unknown key 'model.head.nope'"),
        ("model.nope.kind=pmix", "unknown key 'model.nope.kind'"),
        ("model.head=pmix", "'model.head' is a group; set one of"),
        ("model.head.kind=pmix8", "head"),
        ("model.head.n_pointers=many", "--set model.head.n_pointers"),
        ("model.head.n_pointers=0", "n_pointers must be > 0"),
        ("train.steps", "expects section.key=value"),
        ("steps=3", "expects section.key=value"),
        ("extra.steps=3", "section must be one of ['model', 'train']"),
    ],
)
def test_bad_set_items_are_one_clear_error(item: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_overrides(tiny(), [item])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_replace_at_validates_every_level_and_leaves_the_original() -> None:
    run = tiny()
    out = replace_at(run, "model.head.pmix.scale_init", 5.0)
    assert out.model.head.pmix.scale_init == 5.0 and run.model.head.pmix.scale_init != 5.0
    with pytest.raises(ConfigError):
        replace_at(run, "model.head.kind", "sideways")
    assert config_hash(out) != config_hash(run)
    assert config_hash(
        replace_at(out, "model.head.pmix.scale_init", run.model.head.pmix.scale_init)
    ) == config_hash(run)


def test_build_makes_nested_configs_from_dicts_and_names_unknown_keys() -> None:
    run = tiny()
    assert AlephRunConfig.from_dict(run.to_dict()) == run
    with pytest.raises(ConfigError, match=r"unknown model.head config keys \['sideways'\]"):
        build(type(run.model), {"head": {"sideways": 1}}, "model")


def test_svae_run_config_takes_the_same_set_syntax() -> None:
    run = SVAERunConfig(model=dataclasses.replace(SVAERunConfig().model))
    changes = parse_overrides(run, ["train.steps=20", "train.batch_size=16"])
    assert apply_changes(run, changes).train.steps == 20
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        parse_overrides(run, ["train.nope=1"])
