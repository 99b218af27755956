"""The experiment programs' plans (no Ray): trials, arms, dependencies, bad input."""

from __future__ import annotations

import pytest

from geolip.config import config_diff
from tune.programs import BATTERY_HEADS, PROGRAMS, Options, plan
from tune.spec import SWEEP_SCALES, SweepError, TrialSpec, sweep_scale

TINY = SWEEP_SCALES["tiny"]


def _trials(program: str, seeds: int = 1, **kw) -> list[TrialSpec]:
    return [t for p in plan(program, Options(TINY, seeds, **kw)) for t in p.trials]


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_every_program_plans_unique_trials_with_tags(program: str) -> None:
    phases = plan(program, Options(TINY, 2))
    trials = [t for p in phases for t in p.trials]
    assert trials and len({t.key for t in trials}) == len(trials)
    keys = {t.key for t in trials}
    for t in trials:
        assert t.tags["arm"] == t.arm and t.tags["seed"] == str(t.seed)
        if t.kind == "train":
            assert t.run.train.seed == t.seed and t.run.preset == TINY.preset
            assert t.run.train.steps in (TINY.steps, TINY.graft_steps)
        elif t.kind == "svae":
            assert t.run is None and t.svae.train.seed == t.seed == t.svae.model.seed
            assert t.svae.train.steps == TINY.svae.steps
        else:
            assert t.run is None
        # A dependency is a trial of an earlier phase.
        for dep in (t.donor, t.source):
            assert dep is None or dep in keys
    assert TrialSpec.from_dict(trials[0].to_dict()) == trials[0]


def test_seed_battery_is_heads_by_banks_by_seeds() -> None:
    trials = _trials("seed-battery", seeds=2)
    # byte has no bank; four bank heads x dense/sparse; a softmax twin of each head (sparse)
    assert len(trials) == 2 * (1 + 4 * 2 + 5)
    arms = {t.arm for t in trials}
    assert {"byte", "kernel/dense", "pmix8/sparse", "apmix/dense"} <= arms
    twins = {t.arm: t for t in trials if t.arm.startswith("softmax/") and t.seed == 0}
    assert set(twins) == {"softmax/byte", *(f"softmax/{h}/sparse" for h in BATTERY_HEADS)} - {
        "softmax/byte/sparse"
    }
    aleph = next(t for t in trials if t.arm == "kernel/sparse")
    assert config_diff(aleph.run, twins["softmax/kernel/sparse"].run) == {
        "model.attn": ("aleph", "softmax")
    }
    dense = next(t for t in trials if t.arm == "pmix/dense")
    assert dense.run.train.bank_size == TINY.banks["dense"]
    assert trials[0].run.preset == "tiny"
    pmix8 = next(t for t in trials if t.arm == "pmix8/sparse")
    assert config_diff(dense.run, pmix8.run) == {
        "model.head.n_pointers": (4, 8),
        "train.bank_size": (TINY.banks["dense"], TINY.banks["sparse"]),
    }


def test_preservation_arms_set_the_codebook_treatment() -> None:
    trials = {t.arm: t for t in _trials("preservation")}
    assert len(trials) == 3 * 8
    div = trials["apmix/div_0.03"].run.model.codebook
    assert div.preservation == "div" and div.div_weight == 0.03
    assert trials["kernel/slowlane"].run.model.codebook.slowlane_mult == 0.1
    assert trials["pmix/frozen_random"].run.model.codebook.preservation == "frozen_random"
    assert trials["kernel/free"].run.head == "kernel"


def test_graft_pairs_every_graft_with_cold_starts_and_the_donor_trained_on() -> None:
    phases = plan("graft", Options(TINY, 1))
    assert [p.name for p in phases] == ["donors", "grafts"]
    grafts = {t.arm: t for t in phases[1].trials}
    assert set(grafts) == {
        "depth/graft",
        "depth/cold",
        "mixture/graft",
        "mixture/cold",
        "retrofit/graft",
        "retrofit/cold",
        "depth/cold-full",
        "mixture/cold-full",
        "retrofit/cold-full",
        "warm-restart",
        "continuation",
    }
    assert grafts["depth/graft"].graft == "depth" and grafts["depth/graft"].donor == "donor-s0"
    assert grafts["depth/cold"].donor is None
    assert grafts["depth/graft"].run == grafts["depth/cold"].run  # same config and budget
    donor = phases[0].trials[0].run
    assert grafts["depth/graft"].run.model.n_layers == donor.model.n_layers + 2
    assert grafts["retrofit/graft"].run.head == "apmix" and donor.head == "pmix"
    # Cold at the donor's whole budget: the same architecture, the donor's steps.
    full = grafts["depth/cold-full"]
    assert full.run.train.steps == donor.train.steps > grafts["depth/cold"].run.train.steps
    assert full.run.model == grafts["depth/cold"].run.model and full.donor is None
    assert grafts["warm-restart"].graft == "none" and grafts["warm-restart"].donor == "donor-s0"
    cont = grafts["continuation"]
    assert cont.graft == "continue" and cont.donor == "donor-s0"
    assert cont.run.train.steps == TINY.graft_steps  # extra steps on top of the donor's
    # A given donor replaces the donor phase.
    given = plan("graft", Options(TINY, 1, donor="/some/checkpoint"))
    assert [p.name for p in given] == ["grafts"]
    assert {t.donor for t in given[0].trials if t.donor} == {"/some/checkpoint"}


def test_arms_filter_keeps_what_the_kept_trials_depend_on() -> None:
    phases = plan("graft", Options(TINY, 1, arms=("mixture/graft",)))
    assert [[t.key for t in p.trials] for p in phases] == [["donor-s0"], ["graft-mixture-s0"]]
    contrast = plan("contrast", Options(TINY, 1, arms=("kernel/sparse",)))
    assert {t.key for p in contrast for t in p.trials} == {
        "kernel-sparse-s0",
        "contrast-kernel-sparse-s0",
    }


def test_contrast_of_a_given_battery_only_evaluates() -> None:
    battery = [t.to_dict() for t in _trials("seed-battery")]
    phases = plan("contrast", Options(TINY, 1, source_sweep={"trials": battery, "name": "b"}))
    assert [p.name for p in phases] == ["contrast"]
    trials = phases[0].trials
    assert all(t.kind == "contrast" for t in trials)
    # Every bank head, and the twins whose head reads the codebook (kernel, apmix): byte and
    # the byte/pmix twins have no codebook consumer.
    assert len(trials) == len(battery) - 1 - 3
    assert {t.arm for t in trials} >= {"softmax/kernel/sparse", "softmax/apmix/sparse"}


def test_ladder_and_survey_and_search() -> None:
    ladder = {t.arm: t for t in _trials("ladder")}
    assert set(ladder) == {"d4", "d8", "d8/tauD", "d16", "d16/tauD"}
    assert ladder["d16/tauD"].run.model.tau == 0.05  # 0.1 * sqrt(4/16), exact
    assert config_diff(ladder["d16"].run, ladder["d16/tauD"].run) == {
        "model.tau": (ladder["d16"].run.model.tau, 0.05)
    }
    survey = plan("survey", Options(TINY, 1))
    arms = {t.arm for t in survey[0].trials}
    assert {"kaux/0", "kaux/0.1", "kaux/1", "write/0.1", "context/64"} <= arms
    swaps = survey[1].trials
    assert [(t.arm, t.source, t.bank) for t in swaps] == [
        ("swap/mix", "kaux-0-s0", "mix"),
        ("swap/corpus", "kaux-0-s0", "corpus"),
    ]
    (search,) = plan("search", Options(TINY, 1))
    assert search.search["samples"] == TINY.search_samples
    assert set(search.search["space"]) == {"train.lr", "model.tau", "model.K", "model.chunk"}


def test_hemispheres_pair_routing_and_prediction_heads_with_streamed_context() -> None:
    (phase,) = plan("hemispheres", Options(TINY, 2))
    arms = {t.arm: t for t in phase.trials}
    assert set(arms) == {"routing/byte", "routing/pmix", "prediction/kernel", "prediction/apmix"}
    assert len(phase.trials) == 8  # two seeds
    assert {t.run.model.n_segments for t in phase.trials} == {4}
    assert arms["routing/byte"].bank == "none" and arms["prediction/kernel"].bank == "sparse"
    assert arms["prediction/apmix"].run.head == "apmix"
    assert arms["routing/pmix"].tags["hemisphere"] == "routing"
    base = TINY.base()
    assert arms["routing/pmix"].run.model.seq_trigrams == base.model.seq_trigrams


def test_user_sets_apply_last_to_every_train_trial() -> None:
    sets = (("train.lr", 0.005), ("model.head.n_pointers", 2))
    trials = [t for t in _trials("graft", sets=sets) if t.kind == "train"]
    assert {t.run.train.lr for t in trials} == {0.005}
    # --set wins over the program's own arm (the mixture graft doubles n_pointers).
    assert {t.run.model.head.n_pointers for t in trials} == {2}


def test_sweep_set_is_parsed_at_the_edge_with_one_line_errors(tmp_path, capsys) -> None:
    from pipelines.cli import main

    data = tmp_path / "data"
    base = ["sweep", "ladder", "--dry-run", "--scale", "smoke", "--data-dir", str(data)]
    assert main([*base, "--set", "model.head.n_pointers=8"]) == 0
    assert "model.head.n_pointers=8" in capsys.readouterr().out
    assert main([*base, "--set", "model.head.nope=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.head.nope" in err[0], err
    assert main([*base, "--set", "train.steps=lots"]) == 2
    assert "train.steps" in capsys.readouterr().err
    assert not data.exists()


def test_bad_programs_arms_and_scales_are_named() -> None:
    with pytest.raises(SweepError, match="unknown program 'nope'.*seed-battery"):
        plan("nope", Options(TINY, 1))
    with pytest.raises(SweepError, match=r"unknown arm\(s\) \['pmix/huge'\].*pmix/dense"):
        plan("seed-battery", Options(TINY, 1, arms=("pmix/huge",)))
    with pytest.raises(SweepError, match="unknown --scale 'giant'.*smoke, tiny, small, full"):
        sweep_scale("giant")


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, capsys) -> None:
    from pipelines.cli import main

    data = tmp_path / "data"
    argv = ["sweep", "graft", "--dry-run", "--seeds", "1", "--data-dir", str(data)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "phase donors: 1 trial(s)" in out and "phase grafts: 11 trial(s)" in out
    assert "from donor-s0 (continue)" in out
    assert "graft-depth-s0" in out and "from donor-s0 (depth)" in out
    assert not data.exists()  # no store, no state: nothing ran


def test_a_donor_whose_shapes_cannot_be_grafted_is_refused_before_any_trial(tmp_path) -> None:
    import dataclasses

    from geolip.aleph.bank import bank_from_bytes
    from geolip.aleph.checkpoint import save_checkpoint
    from geolip.aleph.model import AlephLM
    from geolip.aleph.presets import get_preset, with_head
    from pipelines.runtime import RunContext
    from tune.sweep import SweepJob, run_sweep

    run_cfg = with_head(get_preset("tiny"), "pmix")
    narrow = dataclasses.replace(run_cfg, model=dataclasses.replace(run_cfg.model, d_model=32))
    bank = bank_from_bytes(bytes(range(256)) * 64, 64)
    donor = save_checkpoint(tmp_path / "donor", AlephLM(narrow.model, bank), narrow)
    ctx = RunContext.create("sweeps", tmp_path / "d")
    job = SweepJob("graft", ctx, seeds=1, donor=str(donor), dry_run=True)
    with pytest.raises(SweepError, match="cannot be grafted for graft-depth-s0"):
        run_sweep(job, progress=lambda s: None)


def test_svae_rungs_the_lens_over_seeds_and_parses_its_own_set_keys(tmp_path, capsys) -> None:
    from pipelines.cli import main

    trials = _trials("svae", seeds=3)
    assert {t.kind for t in trials} == {"svae"}
    assert sorted({t.svae.model.D_lens for t in trials}) == list(TINY.svae.rungs)
    assert {t.arm for t in trials} == {f"lens/d{d}" for d in TINY.svae.rungs}
    assert len(trials) == 3 * len(TINY.svae.rungs)
    assert {t.svae.train.batch_size for t in trials} == {TINY.svae.batch_size}
    # Every rung keeps the 4 heads (they must divide D_lens): d4 has one mode per head.
    assert {t.svae.model.n_heads for t in trials} == {4}

    data = tmp_path / "data"
    base = ["sweep", "svae", "--dry-run", "--data-dir", str(data)]
    assert main([*base, "--set", "model.V=16", "--set", "train.lr=0.002"]) == 0
    out = capsys.readouterr().out
    assert "lens-d64-s2" in out and "model.V=16" in out and "train.lr=0.002" in out
    assert "600 steps at batch 64 per fit, each with its patch-shuffled control" in out
    # An AlephLM key is not an SVAE key; a rung the heads cannot divide is named.
    assert main([*base, "--set", "model.head.kind=pmix"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.head.kind" in err[0], err
    assert main([*base, "--set", "model.n_heads=8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lens rung lens/d4" in err[0], err
    assert main([*base, "--svae-data", "images:nope"]) == 2
    assert "--svae-data 'images:nope'" in capsys.readouterr().err
    assert not data.exists()
