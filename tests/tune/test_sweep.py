"""``geolip sweep`` end to end on the session's Ray and a real MLflow store.

One tiny seed battery (kernel and pmix on the sparse bank) whose pmix trial's worker dies after
a checkpoint: the sweep records that trial as failed and finishes; ``--resume`` restores the
Tune run, the failed trial continues from its checkpoint and the finished one is not rerun. A
contrast sweep then ablates the battery's checkpoints (found as "the last battery") and shows
the model card's qualitative result; ``geolip sweep report`` re-renders it from MLflow alone.
"""

from __future__ import annotations

import math

import pytest

from pipelines.cli import main
from pipelines.runtime import RunContext
from tune.report import child_runs
from tune.spec import SweepError
from tune.sweep import SweepJob, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ARMS = ("kernel/sparse", "pmix/sparse")
CORPUS = "builtin:python-docs"


def _job(tmp_path, program="seed-battery", workers=1, use_gpu=None, resume=False, **kw):
    ctx = RunContext.create(
        "geolip-sweeps",
        tmp_path / "data",
        workers=workers,
        use_gpu=use_gpu,
        max_failures=0,
        resume=resume,
    )
    base = dict(program=program, ctx=ctx, scale="tiny", seeds=1, arms=ARMS, corpus=CORPUS)
    base.update(kw)
    return SweepJob(**base)


def _children(outcome) -> dict:
    return {r.data.tags["trial"]: r for r in child_runs(outcome.tracking_uri, outcome.run_id)}


def test_battery_with_a_failing_trial_resumes_then_contrast(ray_session, tmp_path, capsys):
    fault = {"pmix-sparse-s0": {"step": 24, "marker": str(tmp_path / "killed"), "delay": 3.0}}
    first = run_sweep(_job(tmp_path, faults=fault), progress=lambda s: None)
    arms = {t["arm"]: t for t in first.summary["arms"]}
    assert arms["kernel/sparse"]["n"] == 1 and arms["pmix/sparse"]["failed"] == 1
    runs = _children(first)
    # One worker: each trial trained in its Tune trial's process, which the fault killed;
    # its run, left RUNNING by the dead process, is marked FAILED with Tune's error.
    assert (
        runs["pmix-sparse-s0"].info.status == "FAILED" and runs["pmix-sparse-s0"].data.tags["error"]
    )
    assert {r.data.params["job.engine"] for r in runs.values()} == {"in-process"}
    kernel_run = runs["kernel-sparse-s0"].info.run_id

    with pytest.raises(SweepError, match="already exists.*--resume"):
        run_sweep(_job(tmp_path, faults=fault), progress=lambda s: None)
    resumed = run_sweep(_job(tmp_path, faults=fault, resume=True), progress=lambda s: None)
    assert resumed.run_id == first.run_id
    runs = _children(resumed)
    assert len(runs) == 2 and runs["kernel-sparse-s0"].info.run_id == kernel_run
    assert "resumed" not in runs["kernel-sparse-s0"].data.tags  # finished: not rerun
    pmix = runs["pmix-sparse-s0"]
    assert pmix.info.status == "FINISHED" and pmix.data.tags.get("resumed") == "true"
    arms = {t["arm"]: t for t in resumed.summary["arms"]}
    assert arms["pmix/sparse"]["n"] == 1 and arms["pmix/sparse"]["failed"] == 0

    contrast = run_sweep(_job(tmp_path, "contrast", arms=()), progress=lambda s: None)
    table = {t["arm"]: t for t in contrast.summary["contrast"]}
    assert set(table) == set(ARMS)
    # Closed loop: the kernel head reads codebook rows by index (§10.2).
    assert table["kernel/sparse"]["permute"] > 1e-3
    assert table["kernel/sparse"]["randomize"] > 1e-3
    # Open loop: permuting is an exact symmetry of pmix.
    assert abs(table["pmix/sparse"]["permute"]) < 1e-5
    capsys.readouterr()
    data = str(tmp_path / "data")
    assert main(["sweep", "report", contrast.run_id, "--data-dir", data, "--no-log"]) == 0
    out = capsys.readouterr().out
    assert "| kernel/sparse | 1 |" in out and "dependence ratio" in out


def test_bad_sweeps_fail_before_any_trial(ray_session, tmp_path, capsys):
    with pytest.raises(SweepError, match="was never started"):
        run_sweep(_job(tmp_path, resume=True), progress=lambda s: None)
    with pytest.raises(SweepError, match="expected a checkpoint directory or an MLflow run id"):
        run_sweep(_job(tmp_path, "graft", arms=(), donor="no-such-donor"), progress=lambda s: None)
    with pytest.raises(SweepError, match="--trial-engine in-process trains one worker per trial"):
        run_sweep(_job(tmp_path, workers=2, trial_engine="in-process"), progress=lambda s: None)
    with pytest.raises(SweepError, match="must be divisible by --workers 3"):
        run_sweep(_job(tmp_path, workers=3, use_gpu=False), progress=lambda s: None)
    # 8 workers split the batch of 8 but not the session's 4 CPUs: refused before any trial.
    with pytest.raises(SweepError, match="one trial needs 8.5 CPUs.*lower --workers"):
        run_sweep(_job(tmp_path, workers=8, use_gpu=False), progress=lambda s: None)
    assert not (tmp_path / "data" / "sweeps").exists() or not any(
        (tmp_path / "data" / "sweeps").glob("*/sweep.json")
    )
    for argv, expected in [
        (["sweep", "seed-battery", "--arms", "pmix/huge"], "unknown arm(s) ['pmix/huge']"),
        (["sweep", "ladder", "--scale", "giant"], "invalid choice: 'giant'"),
        (["sweep", "survey", "--set", "model.nope=1"], "nope"),
        (["sweep", "survey", "--swap-quotas", "word=0.5"], "--swap-quotas 'word=0.5': quotas"),
        (["sweep", "survey", "--swap-corpus", "nope:x"], "--swap-corpus: "),
    ]:
        assert main([*argv, "--data-dir", str(tmp_path / "data")]) != 0
        assert expected in capsys.readouterr().err


def test_with_max_failures_a_trial_survives_a_worker_death(ray_session, tmp_path):
    """--max-failures 1: the trial's worker dies once and the trial finishes anyway, from its
    last checkpoint, in the same MLflow run (no --resume, no second run)."""
    fault = {"pmix-sparse-s0": {"step": 24, "marker": str(tmp_path / "killed"), "delay": 3.0}}
    job = _job(tmp_path, arms=("pmix/sparse",), faults=fault, max_failures=1)
    outcome = run_sweep(job, progress=lambda s: None)
    assert (tmp_path / "killed").exists()  # the worker really died
    runs = child_runs(outcome.tracking_uri, outcome.run_id)
    assert [r.info.status for r in runs] == ["FINISHED"]
    (arm,) = outcome.summary["arms"]
    assert arm["n"] == 1 and arm["failed"] == 0


def test_survey_bank_swap_scores_a_bank_of_other_vocabulary(ray_session, tmp_path, capsys):
    """§13.4: the trained kaux/0 model on a bank of another stratum mix and one of another
    corpus, no retraining; both banks scored on its held-out bytes."""
    from geolip.aleph.bank import load_bank

    job = _job(tmp_path, "survey", scale="smoke", arms=("swap/mix", "swap/corpus"))
    out = run_sweep(job, progress=lambda s: None)
    runs = _children(out)
    assert set(runs) == {"kaux-0-s0", "swap-mix-kaux-0-s0", "swap-corpus-kaux-0-s0"}
    trained = runs["kaux-0-s0"]
    assert trained.data.tags["bank_source"] == "atlas"
    swaps = {t["arm"]: t for t in out.summary["bank_swap"]}
    assert set(swaps) == {"swap/mix", "swap/corpus"}
    for arm, t in swaps.items():
        run = runs[f"swap-{arm.split('/')[1]}-kaux-0-s0"]
        m = run.data.metrics
        # The same model on the same held-out targets: the trained bank's figure is the run's.
        assert m["swap/bpb_trained_bank"] == pytest.approx(
            trained.data.metrics["heldout_bpb_windowed"], rel=1e-9
        ), arm
        assert m["swap/targets"] == trained.data.metrics["heldout_targets"]
        assert m["swap/size_swapped"] == m["swap/size_trained"] == 256  # smoke's sparse bank
        assert m["swap/overlap"] < 1.0, arm  # another vocabulary, not a superset
        assert m["swap/delta_bpb_se"] > 0 and run.data.tags["swap_verdict"] == t["verdict"]
        assert 0 < m["swap/coverage_swapped"] <= 1 and 0 < m["swap/coverage_trained"] <= 1
        bank = load_bank(run.data.params["eval_bank"])
        expected = "builtin:tiny" if arm == "swap/corpus" else CORPUS
        assert bank.provenance["corpus"]["uri"] == expected, arm
    assert (
        load_bank(runs["swap-mix-kaux-0-s0"].data.params["eval_bank"]).provenance["quotas"]["word"]
        == 1.0
    )
    capsys.readouterr()
    data = str(tmp_path / "data")
    assert main(["sweep", "report", out.run_id, "--data-dir", data, "--no-log"]) == 0
    text = capsys.readouterr().out
    assert "bank swap (no retraining" in text and "| swap/corpus | 0 |" in text


def test_hemispheres_show_erank_trajectories_and_their_slopes(ray_session, tmp_path):
    arms = ("routing/pmix", "prediction/kernel")
    # On each trial's own Ray Train worker group (TuneReportCallback carries its reports).
    job = _job(tmp_path, "hemispheres", scale="smoke", arms=arms, trial_engine="ray-train")
    out = run_sweep(job, progress=lambda s: None)
    table = {t["arm"]: t for t in out.summary["erank"]}
    assert set(table) == set(arms)
    for arm, t in table.items():
        assert t["n"] == 1 and math.isfinite(t["slope"]) and t["sign"] != "—", arm
        assert 1.0 <= t["erank_last"] <= 4.0 + 1e-6  # K=64 unit directions in D=4
    runs = _children(out)
    assert runs["routing-pmix-s0"].data.params["config.model.n_segments"] == "4"
    assert {r.data.params["job.engine"] for r in runs.values()} == {"ray-train"}
    from mlflow.tracking import MlflowClient

    plots = {a.path for a in MlflowClient(out.tracking_uri).list_artifacts(out.run_id, "plots")}
    assert "plots/erank.png" in plots


def test_svae_lens_rung_fits_data_and_shuffled_control_with_a_verdict(
    ray_session, tmp_path, capsys
):
    out = run_sweep(
        _job(tmp_path, "svae", scale="smoke", arms=("lens/d8",)),
        progress=lambda s: None,
    )
    (run,) = _children(out).values()
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED" and tags["kind"] == "svae" and tags["arm"] == "lens/d8"
    assert run.data.params["job.engine"] == "in-process"  # both fits in the trial's process
    assert tags["mechanism"] in ("A", "B", "indeterminate") and tags["control_mechanism"]
    assert run.data.params["geo.D_lens"] == "8"
    # Both fits in the one run: the data's curve and the shuffled control's, then the verdict.
    for key in ("mean_alpha", "control/mean_alpha", "verdict/alpha_delta"):
        assert key in metrics, key
    assert "verdict/control/alpha_delta" in metrics and "verdict/control/ablation_gain" in metrics
    table = {t["patches"]: t for t in out.summary["svae"]}
    assert set(table) == {"data", "shuffled"} and all(t["n"] == 1 for t in table.values())
    assert table["data"]["alpha_delta"] == pytest.approx(metrics["verdict/alpha_delta"])
    assert table["data"]["mechanism"] and out.summary["svae_verdicts"][0]["arm"] == "lens/d8"
    assert out.summary["arms"] == []  # no AlephLM trial
    from mlflow.tracking import MlflowClient

    plots = {a.path for a in MlflowClient(out.tracking_uri).list_artifacts(out.run_id, "plots")}
    assert "plots/svae_alpha.png" in plots

    capsys.readouterr()
    data = str(tmp_path / "data")
    assert main(["sweep", "report", out.run_id, "--data-dir", data, "--no-log"]) == 0
    assert "| lens/d8 | data | 1 | 0 |" in capsys.readouterr().out
