"""Bad input to ``geolip sweep PROGRAM`` and ``geolip sweep report``: one error line, exit 2,
nothing on stdout and every file of the case's directory unchanged (no ``mlflow.db``, no
``sweeps/`` state: each case fails in ``tune.plan`` before Ray is imported or the store made).

Two fixtures are built once per module, without Ray: a tiny pmix checkpoint (the graft donor,
``source`` from ``conftest``) and a small MLflow store (``store``) holding a plain run, a sweep
run whose plan file is not a JSON object, and nothing else. A case copies what it needs under
its own directory; ``{plain}`` and ``{badplan}`` in its argv are those runs' ids.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from battery_harness import Case, check_case

LADDER = ("sweep", "ladder", "--scale", "smoke")
GRAFT = ("sweep", "graft", "--scale", "smoke", "--seeds", "1")
CONTRAST = ("sweep", "contrast", "--scale", "smoke")
A_RUN_ID = "0123456789abcdef0123456789abcdef"

# Built in a child interpreter (as ``conftest.build_checkpoint``): mlflow and the package.
BUILD_STORE = """
import json, sys
from pathlib import Path
from pipelines.tracking import check_tracking, ensure_experiment, start_run

root = Path(sys.argv[1])
uri = f"sqlite:///{root}/mlflow/mlflow.db"
check_tracking(uri)
exp = ensure_experiment(uri, "geolip-sweeps", (root / "artifacts").as_uri())
plain = start_run(uri, exp, "plain")
plain.finish()
(root / "plan.json").write_text("[1]")
plan = str(root / "plan.json")
tags = {"kind": "sweep", "program": "seed-battery", "sweep": "s", "sweep_plan": plan}
bad = start_run(uri, exp, "badplan", tags=tags)
bad.finish()
print(json.dumps({"plain": plain.run_id, "badplan": bad.run_id}))
"""


@dataclasses.dataclass(frozen=True)
class Fixtures:
    source: Path
    store: Path
    runs: dict


@pytest.fixture(scope="module")
def fx(source, tmp_path_factory) -> Fixtures:
    root = tmp_path_factory.mktemp("store")
    out = subprocess.run(
        [sys.executable, "-c", BUILD_STORE, str(root)],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
        timeout=180,
    )
    return Fixtures(source, root, json.loads(out.stdout.strip().splitlines()[-1]))


def a_file(name: str = "f"):
    def setup(fx: Fixtures, tmp: Path) -> None:
        (tmp / name).write_text("not a directory\n")

    return setup


def a_dir(fx: Fixtures, tmp: Path) -> None:
    (tmp / "d").mkdir()
    (tmp / "d" / "notes.txt").write_text("not a checkpoint\n")


def donor(edit=None):
    """The tiny checkpoint under the case's directory as ``ck``, then ``edit(ck)``."""

    def setup(fx: Fixtures, tmp: Path) -> None:
        ck = Path(shutil.copytree(fx.source, tmp / "ck"))
        if edit is not None:
            edit(ck)

    return setup


def write(name: str, text: str):
    return donor(lambda ck: (ck / name).write_text(text))


def store(fx: Fixtures, tmp: Path) -> None:
    """The module's MLflow store as the case's default store (``{tmp}/data/mlflow``)."""
    shutil.copytree(fx.store / "mlflow", tmp / "data" / "mlflow")


def sweeps_is_a_file(fx: Fixtures, tmp: Path) -> None:
    (tmp / "data").mkdir()
    (tmp / "data" / "sweeps").write_text("not a directory\n")


def started(fx: Fixtures, tmp: Path) -> None:
    """A sweep named ``s1`` that has started (its plan is written)."""
    state = tmp / "data" / "sweeps" / "s1"
    state.mkdir(parents=True)
    (state / "sweep.json").write_text(json.dumps({"name": "s1", "trials": []}))


def flag(name: str, value: str, expect: str, argv: tuple[str, ...] = LADDER) -> Case:
    """``argv`` with a bad ``--FLAG=VALUE`` (the ``=`` form: a negative value reaches the check)."""
    slug = value.lower().replace("-", "minus")[:12] or "empty"
    return Case(f"{argv[1]}-{name.strip('-')}-{slug}", (*argv, f"{name}={value}"), expect)


NOT_DIVISIBLE = (
    "train.batch_size 8 of trial d4-s0 (the global batch) must be divisible by --workers"
)

OPTION_CASES = [
    Case("program-unknown", ("sweep", "nope"), "argument COMMAND: invalid choice: 'nope'"),
    Case("no-program", ("sweep",), "the following arguments are required: COMMAND"),
    flag("--scale", "giant", "argument --scale: invalid choice: 'giant'"),
    flag("--seeds", "0", "argument --seeds: must be >= 1, got 0"),
    flag("--seeds", "-2", "argument --seeds: must be >= 1, got -2"),
    flag("--seeds", "two", "argument --seeds: expected a whole number, got 'two'"),
    flag("--workers", "0", "argument --workers: must be >= 1, got 0"),
    flag("--workers", "-1", "argument --workers: must be >= 1, got -1"),
    flag("--workers", "1.5", "argument --workers: expected a whole number, got '1.5'"),
    flag("--workers", "3", f"{NOT_DIVISIBLE} 3"),
    flag("--gpu", "maybe", "argument --gpu: invalid choice: 'maybe'"),
    flag("--workers-gpus", "0", "argument --workers-gpus: expected a number of GPUs > 0, got 0"),
    flag("--workers-gpus", "-2", "argument --workers-gpus: expected a number of GPUs > 0"),
    flag("--workers-gpus", "two", "argument --workers-gpus: expected a number of GPUs"),
    flag("--workers-gpus", "2.5", "argument --workers-gpus: more than one GPU per worker must"),
    flag("--wait-nodes", "-1", "argument --wait-nodes: must be >= 0, got -1"),
    flag("--wait-nodes", "1.5", "argument --wait-nodes: expected a whole number, got '1.5'"),
    Case(
        "workers-gpus-with-gpu-off",
        (*LADDER, "--gpu", "off", "--workers-gpus", "1"),
        "--workers-gpus 1 asks for GPUs but --gpu off for none: drop one of them",
    ),
    Case(
        "gpu-on-without-gpus",
        (*LADDER, "--gpu", "on"),
        "--gpu on: the cluster has no GPUs and cannot get any (it has ",
        # A local Ray that sees no GPU on any machine, and prints no token-auth notice.
        env={"CUDA_VISIBLE_DEVICES": "", "RAY_AUTH_MODE": "disabled"},
    ),
    Case("ladder-arms-unknown", (*LADDER, "--arms", "d4,nope"), "unknown arm(s) ['nope']"),
    Case(
        "ladder-arms-unknown-dry-run",
        (*LADDER, "--arms", "nope", "--dry-run"),
        "unknown arm(s) ['nope'] for this program; arms: ['d4', 'd8', 'd8/tauD']",
    ),
    Case(
        "seed-battery-arms-unknown",
        ("sweep", "seed-battery", "--scale", "smoke", "--arms", "pmix/huge"),
        "unknown arm(s) ['pmix/huge']",
    ),
    Case("set-unknown-key", (*LADDER, "--set", "model.nope=1"), "model.nope"),
    Case("set-no-section", (*LADDER, "--set", "nope=1"), "--set expects section.key=value"),
    Case("set-not-a-number", (*LADDER, "--set", "train.steps=lots"), "train.steps"),
    Case("set-steps-0", (*LADDER, "--set", "train.steps=0"), "train.steps must be >= 1, got 0"),
    Case("corpus-malformed", (*LADDER, "--corpus", "bogus"), "--corpus: malformed corpus URI"),
    Case("corpus-scheme", (*LADDER, "--corpus", "ftp:x"), "--corpus: unknown corpus scheme 'ftp'"),
    Case("corpus-builtin", (*LADDER, "--corpus", "builtin:nope"), "unknown builtin corpus 'nope'"),
    Case(
        "corpus-file-missing",
        (*LADDER, "--corpus", "file:{tmp}/missing.txt"),
        "--corpus: corpus file not found",
    ),
    Case("name-path", (*LADDER, "--name", "../x"), "--name '../x': expected a plain name"),
    Case("name-hidden", (*LADDER, "--name", ".x"), "--name '.x': expected a plain name"),
    Case("experiment-empty", (*LADDER, "--experiment", ""), "--experiment: expected an MLflow"),
    Case("ladder-donor", (*LADDER, "--donor", "x"), "--donor is for `geolip sweep graft`"),
    Case("ladder-from", (*LADDER, "--from", "x"), "--from is for `geolip sweep contrast`"),
]

PATH_CASES = [
    Case(
        "data-dir-under-file",
        (*LADDER, "--data-dir", "{tmp}/f/data"),
        "--data-dir {tmp}/f/data lies under {tmp}/f, which is a regular file",
        setup=a_file(),
    ),
    Case(
        "geolip-data-under-file",
        LADDER,
        "--data-dir ($GEOLIP_DATA or ./data) {tmp}/f/data lies under {tmp}/f",
        setup=a_file(),
        env={"GEOLIP_DATA": "{tmp}/f/data"},
    ),
    Case(
        "sweeps-dir-is-a-file",
        LADDER,
        "the sweep's state directory {tmp}/data/sweeps/sweep-ladder-smoke-",
        setup=sweeps_is_a_file,
    ),
    Case("resume-never-started", (*LADDER, "--resume"), "--resume: sweep sweep-ladder-smoke-"),
    Case(
        "already-started",
        (*LADDER, "--name", "s1"),
        "sweep s1 already exists ({tmp}/data/sweeps/s1); pass --resume to continue it",
        setup=started,
    ),
    Case(
        "already-started-dry-run",
        (*LADDER, "--name", "s1", "--dry-run"),
        "sweep s1 already exists",
        setup=started,
    ),
    Case("tracking-uri-file-store", (*LADDER, "--tracking-uri", "file:/x"), "is a file store"),
    Case(
        "tracking-uri-memory",
        (*LADDER, "--tracking-uri", "sqlite:///:memory:"),
        "is not a SQLite file",
    ),
    Case(
        "tracking-server-unreachable",
        (*LADDER, "--tracking-uri", "http://127.0.0.1:9"),
        "tracking server http://127.0.0.1:9 is unreachable",
    ),
]

DONOR_CASES = [
    Case(
        "donor-missing",
        (*GRAFT, "--donor", "{tmp}/nope"),
        "--donor {tmp}/nope does not exist; expected a checkpoint directory or an MLflow run id",
    ),
    Case("donor-is-a-file", (*GRAFT, "--donor", "{tmp}/f"), "is a file", setup=a_file()),
    Case(
        "donor-not-a-checkpoint",
        (*GRAFT, "--donor", "{tmp}/d"),
        "not a geolip checkpoint directory (no config.json)",
        setup=a_dir,
    ),
    Case(
        "donor-meta-not-object",
        (*GRAFT, "--donor", "{tmp}/ck", "--dry-run"),
        "--donor {tmp}/ck: checkpoint file {tmp}/ck/meta.json holds a JSON array; "
        "expected a JSON object",
        setup=write("meta.json", "[1]"),
    ),
    Case(
        "donor-config-not-object",
        (*GRAFT, "--donor", "{tmp}/ck"),
        "config.json holds a JSON string; expected a JSON object",
        setup=write("config.json", '"x"'),
    ),
    Case(
        "donor-config-not-json",
        (*GRAFT, "--donor", "{tmp}/ck"),
        "config.json is not valid JSON",
        setup=write("config.json", "{"),
    ),
    Case(
        "donor-weights-missing",
        (*GRAFT, "--donor", "{tmp}/ck"),
        "model.safetensors are missing",
        setup=donor(lambda ck: (ck / "model.safetensors").unlink()),
    ),
    Case(
        "donor-cannot-be-grafted",
        (*GRAFT, "--donor", "{tmp}/ck", "--set", "model.d_model=32"),
        "cannot be grafted for graft-depth-s0: graft_depth: model.d_model differs",
        setup=donor(),
    ),
    Case(
        "donor-run-id-no-store",
        (*GRAFT, "--donor", A_RUN_ID),
        f"--donor {A_RUN_ID}: no MLflow store at {{tmp}}/data/mlflow/mlflow.db",
    ),
    Case(
        "donor-run-id-unknown",
        (*GRAFT, "--donor", A_RUN_ID),
        f"--donor {A_RUN_ID}: no such MLflow run",
        setup=store,
    ),
    Case(
        "donor-run-without-checkpoint",
        (*GRAFT, "--donor", "{plain}"),
        "--donor {plain}: the MLflow run has no checkpoint artifact",
        setup=store,
    ),
]

SOURCE_CASES = [
    Case(
        "from-no-store",
        (*CONTRAST, "--from", A_RUN_ID),
        f"--from {A_RUN_ID}: no MLflow store at {{tmp}}/data/mlflow/mlflow.db",
    ),
    Case(
        "from-unknown-run",
        (*CONTRAST, "--from", A_RUN_ID, "--dry-run"),
        "no such MLflow run",
        setup=store,
    ),
    Case(
        "from-not-a-sweep",
        (*CONTRAST, "--from", "{plain}"),
        "--from {plain}: not a geolip sweep run (no sweep plan)",
        setup=store,
    ),
    Case(
        "from-plan-not-object",
        (*CONTRAST, "--from", "{badplan}"),
        "plan.json holds a JSON array; expected a JSON object",
        setup=store,
    ),
    Case(
        "report-no-store",
        ("sweep", "report", A_RUN_ID),
        f"sweep report {A_RUN_ID}: no MLflow store at {{tmp}}/data/mlflow/mlflow.db",
    ),
    Case(
        "report-unknown-run",
        ("sweep", "report", A_RUN_ID, "--no-log"),
        f"no MLflow run {A_RUN_ID}",
        setup=store,
    ),
    Case(
        "report-not-a-sweep",
        ("sweep", "report", "{plain}"),
        "MLflow run {plain} is not a geolip sweep",
        setup=store,
    ),
    Case("report-no-run-id", ("sweep", "report"), "the following arguments are required: run_id"),
]

CASES = OPTION_CASES + PATH_CASES + DONOR_CASES + SOURCE_CASES


def with_fixtures(case: Case, fx: Fixtures) -> Case:
    """``case`` whose setup also gets the module's fixtures."""
    setup = case.setup
    return dataclasses.replace(case, setup=None if setup is None else (lambda tmp: setup(fx, tmp)))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sweep_bad_input(case, fx, tmp_path):
    group = "sweep report" if case.argv[1:2] == ("report",) else "sweep"
    runs = {"plain": fx.runs["plain"], "badplan": fx.runs["badplan"]}
    check_case(with_fixtures(case, fx), group, tmp_path, values=runs)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
