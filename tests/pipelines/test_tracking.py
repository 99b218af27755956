"""``pipelines.tracking`` against a real MLflow SQLite store under ``tmp_path`` (and, marked slow,
a real ``mlflow server``)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.runtime import free_port
from pipelines.tracking import (
    RunLogger,
    TrackingError,
    artifact_root,
    check_tracking,
    default_tracking_uri,
    ensure_experiment,
    find_run,
    flatten_params,
    metric_history,
    redacted,
    resolve_tracking_uri,
    start_run,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One initialised SQLite store for the module: creating the schema costs seconds."""
    data = tmp_path_factory.mktemp("data")
    uri = default_tracking_uri(data)
    check_tracking(uri)
    return uri, data


@pytest.fixture
def experiment(store, request):
    uri, data = store
    return uri, ensure_experiment(uri, request.node.name, artifact_root(uri, data))


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_resolve_precedence_flag_then_env_then_default(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = resolve_tracking_uri(None, tmp_path)
    assert default == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert default.startswith("sqlite:////")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri("https://mlflow.example", tmp_path) == "https://mlflow.example"
    assert resolve_tracking_uri("databricks", tmp_path) == "databricks"


def test_relative_sqlite_is_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    root = tmp_path.resolve()
    assert resolve_tracking_uri("sqlite:///runs/m.db", tmp_path) == f"sqlite:///{root}/runs/m.db"
    absolute = f"sqlite:///{root}/x.db?timeout=30"
    assert resolve_tracking_uri(absolute, tmp_path) == absolute


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "./mlruns", "/abs/mlruns"])
def test_file_store_is_refused(uri, tmp_path):
    with pytest.raises(TrackingError, match="sqlite:///") as info:
        resolve_tracking_uri(uri, tmp_path)
    assert uri in str(info.value) and "http://" in str(info.value)


@pytest.mark.parametrize("uri", ["mssql://db/mlflow", "sqlite://", "ftp://host"])
def test_unknown_uri_is_refused_naming_it(uri, tmp_path):
    with pytest.raises(TrackingError, match="expected") as info:
        resolve_tracking_uri(uri, tmp_path)
    assert repr(uri) in str(info.value)


@pytest.mark.parametrize("uri", ["postgresql://u@db:5432/mlflow", "mysql://u@db/mlflow"])
def test_database_stores_are_taken_as_given(uri, tmp_path):
    assert resolve_tracking_uri(uri, tmp_path) == uri
    assert artifact_root(uri, tmp_path) == (tmp_path / "mlflow" / "artifacts").resolve().as_uri()


def test_a_password_never_shows_in_a_uri_we_print():
    assert redacted("postgresql://u:s3cret@db/m") == "postgresql://u:***@db/m"
    assert redacted("postgresql://u@db/m") == "postgresql://u@db/m"


def test_check_tracking_unreachable_server_fails_fast():
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TrackingError, match="unreachable") as info:
        check_tracking(uri, timeout=2.0)
    assert uri in str(info.value) and "--tracking-uri" in str(info.value)
    assert time.monotonic() - start < 5


def test_check_tracking_unusable_directory_is_named(tmp_path):
    # A regular file where the store's directory should be: no directory can be made there
    # (unlike permission bits, this holds for root too).
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    with pytest.raises(TrackingError) as info:
        check_tracking(f"sqlite:///{blocker}/mlflow/mlflow.db")
    assert str(blocker) in str(info.value) and "cannot create" in str(info.value)


def test_check_tracking_creates_directory_and_schema(store):
    uri, data = store
    assert (data / "mlflow" / "mlflow.db").is_file()
    check_tracking(uri)  # a second call in the same process is cheap and harmless
    assert _client(uri).search_experiments(max_results=1) is not None


def test_ensure_experiment_is_idempotent_with_absolute_artifacts(store):
    uri, data = store
    root = artifact_root(uri, data)
    assert root == (data / "mlflow" / "artifacts").resolve().as_uri()
    first = ensure_experiment(uri, "survey small", root)
    assert ensure_experiment(uri, "survey small", root) == first
    location = _client(uri).get_experiment(first).artifact_location
    assert location == f"{root}/survey%20small"
    assert artifact_root("http://127.0.0.1:5000", data) is None


def test_deleted_experiment_says_how_to_restore(store):
    uri, _ = store
    eid = ensure_experiment(uri, "gone")
    _client(uri).delete_experiment(eid)
    with pytest.raises(TrackingError, match="restore"):
        ensure_experiment(uri, "gone")


def test_flatten_params():
    @dataclasses.dataclass(frozen=True)
    class Opt:
        lr: float = 1e-3

    flat = flatten_params(
        {"model": {"d": 64, "heads": (2, 4)}, "opt": Opt(), "name": "x" * 7000, "n": None}
    )
    assert flat == {
        "model.d": "64",
        "model.heads": "[2, 4]",
        "opt.lr": "0.001",
        "name": "x" * 6000,
        "n": "None",
    }
    assert flatten_params({"a": {"b": 1}}, prefix="cfg.") == {"cfg.a.b": "1"}


def test_run_logger_round_trip(experiment):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    uri, eid = experiment
    run = start_run(uri, eid, "abc123", tags={"arm": "pmix"}, params={"model": {"d": 64}})
    for step in range(500):
        run.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    assert len(metric_history(uri, run.run_id, "loss")) == 400  # two full batches written
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    run.log_figure(fig, "loss")
    plt.close(fig)
    run.log_dict({"a": 1}, "summary.json")
    run.log_text("hello", "notes/readme.txt")
    run.finish()

    history = metric_history(uri, run.run_id, "loss")
    assert [s for s, _ in history] == list(range(500))
    assert history[-1][1] == pytest.approx(1.0 / 500)
    client = _client(uri)
    got = client.get_run(run.run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "abc123"
    assert got.data.params == {"model.d": "64"} and got.data.tags["arm"] == "pmix"
    assert [a.path for a in client.list_artifacts(run.run_id, "plots")] == ["plots/loss.png"]
    assert {a.path for a in client.list_artifacts(run.run_id)} >= {"summary.json", "notes"}
    assert got.info.artifact_uri.startswith(client.get_experiment(eid).artifact_location + "/")
    assert find_run(uri, eid, "abc123") == run.run_id


def test_non_finite_metrics_are_skipped_and_counted(experiment):
    uri, eid = experiment
    with start_run(uri, eid, "nan") as run:
        run.log_metrics({"loss": float("nan"), "acc": 0.5}, step=0)
        run.log_metrics({"loss": float("inf"), "acc": 0.6}, step=1)
    assert run.skipped_nonfinite == 2
    assert metric_history(uri, run.run_id, "loss") == []
    assert metric_history(uri, run.run_id, "acc") == [(0, 0.5), (1, 0.6)]


def test_a_restored_run_does_not_log_its_redone_steps_again(experiment):
    """A run lost after logging steps past its last checkpoint redoes them when restored:
    the run keeps the first value of each step, and the new steps follow."""
    uri, eid = experiment
    first = start_run(uri, eid, "restored")
    for step in (10, 20, 30):
        first.log_metrics({"bpb": float(step)}, step=step)
    first.log_metrics({"val_bpb": 1.0}, step=20)
    first.flush()
    again = RunLogger(uri, first.run_id)  # the worker group that continues from step 20
    again.skip_logged_steps()
    for step in (30, 40):
        again.log_metrics({"bpb": step + 0.5, "val_bpb": 2.0}, step=step)
    again.finish()
    bpb = metric_history(uri, first.run_id, "bpb")
    assert bpb == [(10, 10.0), (20, 20.0), (30, 30.0), (40, 40.5)]
    assert metric_history(uri, first.run_id, "val_bpb") == [(20, 1.0), (30, 2.0), (40, 2.0)]


def test_finish_failed_sets_status_and_error_tag(experiment):
    uri, eid = experiment
    run = start_run(uri, eid, "boom")
    run.log_metrics({"loss": 2.0}, step=3)
    run.finish("FAILED", error="x" * 6000)
    run.finish()  # already terminated: no-op
    got = _client(uri).get_run(run.run_id)
    assert got.info.status == "FAILED" and got.data.tags["error"] == "x" * 5000
    assert metric_history(uri, run.run_id, "loss") == [(3, 2.0)]  # flushed before terminating
    with pytest.raises(TrackingError, match="FINISHED"):
        RunLogger(uri, run.run_id).finish("DONE")


def test_context_manager_marks_failed_on_exception(experiment):
    uri, eid = experiment
    parent = start_run(uri, eid, "parent")
    with pytest.raises(RuntimeError), start_run(uri, eid, "child", parent_run_id=parent.run_id):
        raise RuntimeError("diverged\nat step 7")
    parent.finish()
    child = _client(uri).get_run(find_run(uri, eid, "child"))
    assert child.info.status == "FAILED"
    assert child.data.tags["error"] == "RuntimeError('diverged\\nat step 7')"
    assert child.data.tags["mlflow.parentRunId"] == parent.run_id


def test_find_run_returns_most_recent(experiment):
    uri, eid = experiment
    assert find_run(uri, eid, "again") is None
    first = start_run(uri, eid, "again")
    first.finish()
    time.sleep(0.01)  # start times are in milliseconds
    second = start_run(uri, eid, "again")
    second.finish()
    assert find_run(uri, eid, "again") == second.run_id


def test_resume_continues_the_run_by_its_id_never_by_name(experiment):
    """Two runs share a name (two users on one server): a resume continues the one whose id
    the checkpoint recorded; an id from another experiment or a deleted run is one line."""
    from pipelines.tracking import ensure_experiment, open_run

    uri, eid = experiment
    mine = start_run(uri, eid, "shared-name")
    mine.finish()
    theirs = start_run(uri, eid, "shared-name")  # newer: a by-name search would pick it
    theirs.finish()
    again = open_run(uri, eid, "shared-name", resume=True, run_id=mine.run_id)
    assert again.run_id == mine.run_id
    assert _client(uri).get_run(mine.run_id).data.tags["resumed"] == "true"
    other = ensure_experiment(uri, "someone-elses")
    with pytest.raises(TrackingError, match=f"belongs to experiment {eid}, not {other}"):
        open_run(uri, other, "shared-name", resume=True, run_id=mine.run_id)
    with pytest.raises(TrackingError, match="has no such run"):
        open_run(uri, eid, "x", resume=True, run_id="0123456789abcdef0123456789abcdef")
    _client(uri).delete_run(theirs.run_id)
    with pytest.raises(TrackingError, match="is deleted"):
        open_run(uri, eid, "shared-name", resume=True, run_id=theirs.run_id)
    # Children are found under their parent: the same name under another parent is not theirs.
    parent = start_run(uri, eid, "sweep")
    child = start_run(uri, eid, "trial", parent_run_id=parent.run_id)
    start_run(uri, eid, "trial").finish()
    assert find_run(uri, eid, "trial", parent.run_id) == child.run_id


def test_every_run_records_its_context_and_config(experiment):
    from pipelines.run_context import git_commit, versions

    uri, eid = experiment
    config = {"model": {"d": 64}, "train": {"steps": 3}}
    run = start_run(uri, eid, "ctx", config=config, device="2 x cuda")
    run.finish()
    got = _client(uri).get_run(run.run_id)
    tags = got.data.tags
    assert tags["geolip.device"] == "2 x cuda" and tags["mlflow.user"]
    assert tags["geolip.version.mlflow"] == versions()["mlflow"]
    if git_commit():
        assert tags["mlflow.source.git.commit"] == git_commit()
    from geolip.config import config_hash

    assert tags["geolip.config_hash"] == config_hash(config)
    path = _client(uri).download_artifacts(run.run_id, "config.json")
    assert json.loads(Path(path).read_text()) == config


@pytest.mark.slow
def test_logging_through_a_real_mlflow_server(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    cmd += ["--default-artifact-root", str(tmp_path / "artifacts")]
    with open(tmp_path / "server.log", "wb") as out:
        # Own session: `mlflow server` starts uvicorn as a child, which must go down with it.
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                check_tracking(uri, timeout=1.0)
                break
            except TrackingError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "server.log").read_text()[-2000:])
                time.sleep(0.5)
        eid = ensure_experiment(uri, "served")
        assert ensure_experiment(uri, "served") == eid
        with start_run(uri, eid, "r", params={"a": {"b": 1}}) as run:
            run.log_metrics({"loss": 1.0}, step=0)
            run.log_metrics({"loss": 0.5}, step=1)
            run.log_text("hi", "note.txt")
        assert metric_history(uri, run.run_id, "loss") == [(0, 1.0), (1, 0.5)]
        got = _client(uri).get_run(run.run_id)
        assert got.info.status == "FINISHED" and got.data.params == {"a.b": "1"}
        assert find_run(uri, eid, "r") == run.run_id
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
