"""A trial that fails before its own MLflow run exists is still recorded (real SQLite store)."""

from __future__ import annotations

import pytest

from pipelines.tracking import check_tracking, ensure_experiment, start_run
from tune.report import arm_table, child_runs
from tune.spec import TrialSpec
from tune.trial import run_trial


def test_a_trial_failing_before_its_run_is_recorded_failed(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    check_tracking(uri)
    experiment = ensure_experiment(uri, "sweeps", str(tmp_path / "artifacts"))
    parent = start_run(uri, experiment, "sweep-x", tags={"kind": "sweep", "program": "contrast"})
    spec = TrialSpec(key="contrast-a", arm="pmix/dense", kind="contrast", source="missing",
                     tags={"arm": "pmix/dense", "seed": "0"})  # fmt: skip
    ctx = {"sweep": "sweep-x", "program": "contrast", "phase": "contrast",
           "parent_run_id": parent.run_id, "uri": uri, "experiment_id": experiment,
           "data_dir": str(tmp_path), "external": {}}  # fmt: skip
    with pytest.raises(Exception, match="missing"):
        run_trial({"key": spec.key}, {spec.key: spec.to_dict()}, ctx)
    (run,) = child_runs(uri, parent.run_id)
    assert run.info.status == "FAILED" and "missing" in run.data.tags["error"]
    assert run.data.tags["trial"] == "contrast-a" and run.data.tags["kind"] == "contrast"
    # Failed train trials count as failed arms in the summary.
    train = TrialSpec(key="pmix-s0", arm="pmix/dense", donor="nowhere", graft="depth",
                      tags={"arm": "pmix/dense", "seed": "0"})  # fmt: skip
    ctx.update(phase="grafts", corpus="builtin:tiny", preset="tiny", steps=5, scale_overrides=[],
               sets=[], workers=1, use_gpu=False, max_failures=0, eval_bytes=1000,
               experiment="sweeps", faults={})  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017  (outside Tune even the callback refuses)
        run_trial({"key": train.key}, {train.key: train.to_dict()}, ctx)
    rows = [{"arm": r.data.tags["arm"], "kind": r.data.tags["kind"], "status": r.info.status,
             "metrics": {}, "seed": "0", "head": "", "run_id": "", "sample": ""}
            for r in child_runs(uri, parent.run_id)]  # fmt: skip
    (arm,) = arm_table("graft", rows)
    assert arm["failed"] == 1 and arm["n"] == 0
