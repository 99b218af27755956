"""A trial that fails before its own MLflow run exists is still recorded (real SQLite store)."""

from __future__ import annotations

import pytest

from pipelines.runtime import RunContext
from pipelines.tracking import check_tracking, ensure_experiment, start_run
from tune.report import arm_table, child_runs
from tune.spec import SWEEP_SCALES, TrialSpec
from tune.trial import TrialContext, run_trial


def test_a_trial_failing_before_its_run_is_recorded_failed(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    check_tracking(uri)
    experiment = ensure_experiment(uri, "sweeps", str(tmp_path / "artifacts"))
    parent = start_run(uri, experiment, "sweep-x", tags={"kind": "sweep", "program": "contrast"})
    spec = TrialSpec(
        key="contrast-a",
        arm="pmix/dense",
        kind="contrast",
        source="missing",
        tags={"arm": "pmix/dense", "seed": "0"},
    )
    run_ctx = RunContext.create("sweeps", tmp_path, uri, max_failures=0, use_gpu=False)
    ctx = TrialContext(
        sweep="sweep-x",
        program="contrast",
        parent_run_id=parent.run_id,
        experiment_id=experiment,
        run=run_ctx,
        phase="contrast",
    )
    with pytest.raises(Exception, match="missing"):
        run_trial({"key": spec.key}, {spec.key: spec}, ctx)
    (run,) = child_runs(uri, parent.run_id)
    assert run.info.status == "FAILED" and "missing" in run.data.tags["error"]
    assert run.data.tags["trial"] == "contrast-a" and run.data.tags["kind"] == "contrast"
    # Failed train trials count as failed arms in the summary.
    train = TrialSpec(
        key="pmix-s0",
        arm="pmix/dense",
        run=SWEEP_SCALES["smoke"].base(),
        donor="nowhere",
        graft="depth",
        tags={"arm": "pmix/dense", "seed": "0"},
    )
    ctx = ctx.replace(phase="grafts", corpus="builtin:tiny", eval_bytes=1000)
    with pytest.raises(Exception):  # noqa: B017  (outside Tune even the callback refuses)
        run_trial({"key": train.key}, {train.key: train}, ctx)
    rows = [
        {
            "arm": r.data.tags["arm"],
            "kind": r.data.tags["kind"],
            "status": r.info.status,
            "metrics": {},
            "seed": "0",
            "head": "",
            "run_id": "",
            "sample": "",
        }
        for r in child_runs(uri, parent.run_id)
    ]
    (arm,) = arm_table("graft", rows)
    assert arm["failed"] == 1 and arm["n"] == 0
