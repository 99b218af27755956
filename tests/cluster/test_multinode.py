"""A real multi-node Ray cluster on this machine, driven only through ``geolip submit``.

One head with no CPUs (as on KubeRay) and two worker nodes, each a ``ray start --block`` in its
own process group with its own temp dir and ports (``tests/ray_cluster.py``), shared by three
jobs: an atlas build, a 2-worker training and a 2-trial sweep. While the sweep runs, once both
trials have a checkpoint, one worker node is SIGKILLed (its whole process group, as a preempted
machine disappears): the sweep, which defaults to ``--max-failures 1`` on a multi-node cluster,
still succeeds; the trial that lost its node continues from its checkpoint, in its own MLflow run,
and MLflow holds exactly the parent and two children, each history complete and without a
duplicated step.

All nodes are on this machine, so the test's tmp dir is the shared POSIX storage: the data dir
and the SQLite store under it are absolute paths every node reaches. The test records a timeline
(nodes, kill, restarts, final MLflow state), prints it, and writes it as JSON to
``$GEOLIP_MULTINODE_TIMELINE`` when that is set.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import ray  # noqa: F401 (here: Ray's log handler keeps the stderr it first sees, not a test's)
from atlas_testdata import TEXT
from ray_cluster import descendants, process_title, ray_cluster

from cluster.submit import client as job_client
from pipelines.cli import main
from pipelines.tracking import client as mlflow_client

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CORPUS = "builtin:python-docs"  # builtin:tiny is one chunk: too small for 2 workers
SWEEP = "mn-battery"
TRIALS = ("kernel-sparse-s0", "pmix-sparse-s0")
STEPS, LOG_EVERY = 60, 6  # a checkpoint every 12 steps (a fifth of the run)
START = re.compile(r"run (\S+): training from step (\d+)")


@pytest.fixture(scope="module")
def timeline():
    """The test's record of what happened when; printed and written out at the end."""
    record: dict = {"t0": time.time(), "events": []}
    yield record
    record["total_s"] = round(time.time() - record["t0"], 1)
    text = json.dumps(record, indent=2, default=str)
    print(f"\nmulti-node timeline:\n{text}")
    if os.environ.get("GEOLIP_MULTINODE_TIMELINE"):
        Path(os.environ["GEOLIP_MULTINODE_TIMELINE"]).write_text(text + "\n")


def _event(timeline: dict, what: str, **details) -> None:
    timeline["events"].append(
        {"t": round(time.time() - timeline["t0"], 1), "event": what, **details}
    )


@pytest.fixture(scope="module")
def cluster(timeline):
    """A 0-CPU head and two worker nodes of 3 logical CPUs each, for the whole module: either
    node holds both trials (0.5 CPU for a trial's driver, 1 for its Ray Train worker), so the
    sweep goes on at full speed on the node that survives."""
    with ray_cluster(workers=2, worker_cpus=3) as c, pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_TOKEN", c.token)  # what geolip submit sends
        for node in (c.head, *c.workers):
            _event(
                timeline,
                f"{node.name} up",
                started=round(node.started - timeline["t0"], 1),
                up_s=round(node.up - node.started, 1),
                temp_dir=node.temp_dir,
            )
        yield c


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("multinode") / "data"


def _submit(cluster, data: Path, *command: str, wait: bool = True) -> list[str]:
    return [
        "submit",
        "--address",
        cluster.url,
        *([] if wait else ["--no-wait"]),
        "--working-dir",
        str(REPO),
        "--data-dir",
        str(data),
        "--",
        "geolip",
        *command,
    ]


def test_an_atlas_build_runs_on_the_worker_nodes(cluster, data, tmp_path, timeline, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT * 20, encoding="utf-8")
    out = data / "atlas"
    argv = [
        "atlas",
        "build",
        "--corpus",
        f"file:{corpus}",
        "--out",
        str(out),
        "--target-size",
        "2K",
    ]
    assert main(_submit(cluster, data, *argv)) == 0, capsys.readouterr().out[-3000:]
    _event(timeline, "atlas build succeeded")
    manifest = json.loads((out / "manifest.json").read_text())
    kept = {name: stratum["kept"] for name, stratum in manifest["strata"].items()}
    assert set(kept) == {"char", "word", "unicode"} and min(kept.values()) > 0, kept
    assert any(out.rglob("*.parquet"))


def test_a_two_worker_training_succeeds(cluster, data, timeline, capsys):
    argv = ["train", "aleph", "--corpus", CORPUS, "--scale", "smoke", "--workers", "2"]
    assert main(_submit(cluster, data, *argv)) == 0, capsys.readouterr().out[-3000:]
    _event(timeline, "2-worker training succeeded")
    client = mlflow_client(f"sqlite:///{data / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("geolip-aleph").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["job.workers"] == "2"


def test_a_sweep_survives_losing_a_worker_node(cluster, data, timeline, capsys):
    argv = [
        "sweep",
        "seed-battery",
        "--scale",
        "smoke",
        "--arms",
        "kernel/sparse,pmix/sparse",
        "--seeds",
        "1",
        "--corpus",
        CORPUS,
        "--workers",
        "1",
        "--name",
        SWEEP,
        "--set",
        f"train.steps={STEPS}",
        "--set",
        f"train.log_every={LOG_EVERY}",
    ]
    assert main(_submit(cluster, data, *argv, wait=False)) == 0
    sid = re.search(r"submitted (\S+):", capsys.readouterr().out).group(1)
    jobs = job_client(cluster.url)
    _event(timeline, "sweep submitted", job=sid)

    storage, uri, seen = data / "ray_results", f"sqlite:///{data / 'mlflow' / 'mlflow.db'}", {}

    def checkpointed() -> bool:
        _note_runs(uri, timeline, seen)
        return all(_checkpoints(storage, t) for t in TRIALS) or _ended(jobs, sid)

    def ended() -> bool:
        _note_runs(uri, timeline, seen)
        return _ended(jobs, sid)

    _wait(checkpointed, 400, every=2.0)
    assert not _ended(jobs, sid), jobs.get_job_logs(sid)[-3000:]
    _event(
        timeline,
        "both trials have a checkpoint",
        checkpoints={t: _checkpoints(storage, t) for t in TRIALS},
    )
    victim = max(cluster.workers, key=lambda n: len(_training_processes(n)))
    training = _training_processes(victim)
    assert training, "no training process on either worker node"
    pids = cluster.kill(victim)
    _event(
        timeline,
        f"SIGKILL {victim.name}'s process group",
        processes=len(pids),
        training_processes=training,
    )

    try:
        _wait(ended, 600, every=2.0)
    finally:
        logs = jobs.get_job_logs(sid)
        (data.parent / "sweep-job.log").write_text(logs)  # the whole log, beside the data
    status = str(jobs.get_job_status(sid).value)
    _event(timeline, f"sweep job {status}")
    starts = [(m.group(1), int(m.group(2))) for m in START.finditer(logs)]
    timeline["starts_in_job_log"] = starts
    assert status == "SUCCEEDED", logs[-4000:]

    state = _mlflow_state(uri)
    timeline["mlflow"] = state
    assert [r["name"] for r in state["runs"]] == [SWEEP, *(f"{SWEEP}-{t}" for t in TRIALS)]
    assert all(r["status"] == "FINISHED" for r in state["runs"])
    for child in state["runs"][1:]:
        assert child["duplicated_steps"] == {}, child
        assert child["last_step"] == STEPS, child
        assert child["steps"] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)), child
    # Both trials started from step 0; the lost one continued from its checkpoint, in its own
    # run (Ray's log forwarding may print a line twice: the steps are compared as sets).
    firsts = {name for name, step in starts if step == 0}
    restarts = {(name, step) for name, step in starts if step > 0}
    timeline["restarts_from_checkpoint"] = sorted(restarts)
    assert firsts == {f"{SWEEP}-{t}" for t in TRIALS}, starts
    assert restarts, f"no trial continued from a checkpoint after the kill: {starts}"
    assert all(step >= STEPS // 5 for _, step in restarts), restarts
    resumed = {r["name"] for r in state["runs"][1:] if r["resumed"]}
    assert resumed <= {name for name, _ in restarts}, (resumed, restarts)


def _wait(condition, timeout: float, every: float = 1.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise TimeoutError(f"not done within {timeout:.0f} s")
        time.sleep(every)


def _note_runs(uri: str, timeline: dict, seen: dict) -> None:
    """Note each change of a trial's MLflow run (status, last step, resumed) in the timeline."""
    try:
        runs = _mlflow_state(uri, dups=False)["runs"]
    except Exception:  # noqa: BLE001 (the store is not created yet, or busy: look next time)
        return
    for run in runs:
        now = {"status": run["status"], "step": run.get("last_step"), "resumed": run["resumed"]}
        if seen.get(run["name"]) != now:
            seen[run["name"]] = now
            _event(timeline, "mlflow", run=run["name"], **now)


def _ended(jobs, sid: str) -> bool:
    return str(jobs.get_job_status(sid).value) in ("SUCCEEDED", "FAILED", "STOPPED")


def _checkpoints(storage: Path, trial: str) -> list[str]:
    return sorted(p.name for p in (storage / f"{SWEEP}-{trial}").glob("checkpoint_*"))


def _training_processes(node) -> list[str]:
    """The titles of the Ray workers on ``node`` that run a trial's driver, its Ray Train
    controller or one of its Train workers (not Ray Data's or Tune's helpers)."""
    titles = [process_title(pid) for pid in descendants(node.proc.pid)]
    kinds = ("ray::ImplicitFunc", "ray::TrainController", "ray::RayTrainWorker")
    return [t for t in titles if t.startswith(kinds)]


def _mlflow_state(uri: str, dups: bool = True) -> dict:
    """The sweep's runs (parent first) with each child's logged steps and duplicated steps."""
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name("geolip-sweeps")
    runs = sorted(
        client.search_runs([experiment.experiment_id]),
        key=lambda r: (r.data.tags.get("mlflow.parentRunId") is not None, r.info.run_name),
    )
    out = []
    for run in runs:
        row = {
            "name": run.info.run_name,
            "status": run.info.status,
            "resumed": run.data.tags.get("resumed") == "true",
        }
        if "mlflow.parentRunId" in run.data.tags:
            history = client.get_metric_history(run.info.run_id, "bpb")
            steps = sorted(m.step for m in history)
            row["steps"] = sorted(set(steps))
            row["last_step"] = max(steps, default=None)
            if dups:
                row["duplicated_steps"] = _duplicates(client, run)
        out.append(row)
    return {"runs": out}


def _duplicates(client, run) -> dict:
    """``{metric: [steps logged more than once]}`` over every metric of ``run``."""
    dups = {}
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        again = sorted({s for s in steps if steps.count(s) > 1})
        if again:
            dups[key] = again
    return dups
