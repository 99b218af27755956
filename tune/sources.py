"""What a sweep reads from elsewhere: another sweep's plan (``--from``, or the last seed battery
that a contrast ablates) and a donor checkpoint (``--donor``), checked before any trial starts."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.aleph.job import graft_donor, load_donor
from pipelines.tracking import client
from tune.spec import Phase, SweepError


def source_sweep(uri: str, run_id: str) -> dict:
    """The plan of the sweep whose parent MLflow run is ``run_id`` (``--from``)."""
    try:
        run = client(uri).get_run(run_id)
    except Exception as exc:
        raise SweepError(f"--from {run_id}: no such MLflow run in {uri}") from exc
    name = run.data.tags.get("sweep")
    data_plan = plan_file(run)
    if not name or data_plan is None:
        raise SweepError(f"--from {run_id}: not a geolip sweep run (no sweep plan)")
    return data_plan


def last_battery(uri: str, experiment: str, corpus: str) -> dict | None:
    """The plan of the latest finished ``seed-battery`` sweep on ``corpus`` (None: there is none)."""
    mlflow = client(uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return None
    query = (
        "tags.program = 'seed-battery' and tags.kind = 'sweep' and attributes.status = 'FINISHED'"
    )
    runs = mlflow.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"])
    for run in runs:
        plan_doc = plan_file(run)
        if plan_doc is not None and run.data.params.get("corpus") == corpus:
            return plan_doc
    return None


def plan_file(run) -> dict | None:
    path = run.data.tags.get("sweep_plan")
    if not path or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def donor_path(donor: str, uri: str, data: Path) -> Path:
    """``--donor``: a checkpoint directory, or an MLflow run id whose checkpoint is downloaded."""
    path = Path(donor).expanduser()
    if path.is_dir():
        if not (path / "geo_config.json").exists() and not (path / "config.json").exists():
            raise SweepError(f"--donor {donor}: not a geolip checkpoint directory")
        return path.resolve()
    try:
        mlflow = client(uri)
        mlflow.get_run(donor)
    except Exception as exc:
        raise SweepError(
            f"--donor {donor}: neither a checkpoint directory nor an MLflow run in {uri}"
        ) from exc
    dst = data / "donors" / donor
    if not (dst / "checkpoint").is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        mlflow.download_artifacts(donor, "checkpoint", str(dst))
    return (dst / "checkpoint").resolve()


def check_grafts(phases: list[Phase], donor: Path) -> None:
    """Graft the donor onto every target now: a shape that cannot be grafted fails before Tune."""
    model = load_donor(str(donor))
    for t in (t for p in phases for t in p.trials if t.donor):
        try:
            graft_donor(model, t.run, t.graft, None)
        except ValueError as exc:
            raise SweepError(f"--donor {donor} cannot be grafted for {t.key}: {exc}") from exc
