"""Bad input to ``geolip submit`` and ``geolip jobs list|status|logs|stop``: one error line,
exit 2, nothing on stdout and every file of the case's directory unchanged.

No Ray cluster runs: the command, the paths and the address are checked before connecting, and
"no cluster" is ``$RAY_ADDRESS`` (or ``--address``) pointing at a port nobody listens on (9, the
discard port; the default 127.0.0.1:8265 may be another user's dashboard on a shared machine).
``{server}`` is a fake job server started by the module (``fake_server``): it answers Ray's
version check, lists no jobs, refuses every submission and knows no submission id.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from battery_harness import Case, check_case

NOWHERE = "http://127.0.0.1:9"
TRAIN = ("geolip", "train", "aleph", "--corpus", "builtin:tiny")
SUBMIT = ("submit", "--data-dir", "/shared/geolip")
NO_CLUSTER = {"RAY_ADDRESS": NOWHERE}


class FakeJobServer(BaseHTTPRequestHandler):
    """Ray's job REST API as far as these cases reach it."""

    def _send(self, code: int, body) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.startswith("/api/version"):
            self._send(200, {"version": "4", "ray_version": "2.60.0", "ray_commit": "fake"})
        elif self.path.rstrip("/") == "/api/jobs":
            self._send(200, [])
        else:
            self._send(404, f"Job {self.path.split('/')[3]} does not exist")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") == "/api/jobs":
            self._send(500, "the fake server takes no jobs")
        else:
            self._send(404, "Job does not exist")

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJobServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def a_file(tmp: Path) -> None:
    (tmp / "f").write_text("not a directory\n")


def runtime_env(text: str):
    """A ``--runtime-env`` file ``{tmp}/env.yaml`` holding ``text`` (``{tmp}`` filled in)."""

    def setup(tmp: Path) -> None:
        (tmp / "env.yaml").write_text(text.replace("{tmp}", str(tmp)), encoding="utf-8")

    return setup


ENV_FILE = ("--runtime-env", "{tmp}/env.yaml")


SUBMIT_CASES = [
    Case("nothing", ("submit",), "nothing to submit: give a geolip command after --"),
    Case("nothing-after-dashes", ("submit", "--"), "nothing to submit"),
    Case("only-geolip", (*SUBMIT, "--", "geolip"), "nothing to submit"),
    Case(
        "not-geolip",
        (*SUBMIT, "--", "ls", "-la"),
        "not a geolip command: 'ls'; expected `geolip submit -- geolip COMMAND ...`",
    ),
    Case("unknown-command", (*SUBMIT, "--", "geolip", "nope"), "not a geolip command: 'nope'"),
    Case(
        "unknown-subcommand",
        (*SUBMIT, "--", "geolip", "train", "nope"),
        "not a valid geolip command: geolip train: argument COMMAND: invalid choice: 'nope'",
    ),
    Case(
        "command-missing-flag",
        (*SUBMIT, "--", "geolip", "train", "aleph"),
        "not a valid geolip command: geolip train aleph: the following arguments are "
        "required: --corpus",
    ),
    Case(
        "command-unknown-flag",
        (*SUBMIT, "--", *TRAIN, "--bogus"),
        "not a valid geolip command: geolip: unrecognized arguments: --bogus",
    ),
    Case(
        "command-bad-value",
        (*SUBMIT, "--", *TRAIN, "--workers", "0"),
        "not a valid geolip command: geolip train aleph: argument --workers: must be >= 1",
    ),
    Case("command-only-help", (*SUBMIT, "--", "geolip", "--help"), "it only prints help"),
    Case(
        "command-out-relative",
        ("submit", "--", "geolip", "atlas", "build", "--corpus", "builtin:tiny", "--out", "a"),
        "--out a is relative: on the cluster it would land in the job's temporary working",
    ),
    Case(
        "command-data-dir-relative",
        ("submit", "--", *TRAIN, "--data-dir", "data"),
        "--data-dir data is relative",
    ),
    Case(
        "command-checkpoint-relative",
        (*SUBMIT, "--", "geolip", "eval", "aleph", "ck", "--corpus", "builtin:tiny"),
        "--checkpoint ck is relative",
    ),
    Case("data-dir-relative", ("submit", "--data-dir", "rel", "--", *TRAIN), "--data-dir rel is"),
    Case(
        "geolip-data-relative",
        ("submit", "--", *TRAIN),
        "--data-dir rel/data is relative",
        env={"GEOLIP_DATA": "rel/data"},
    ),
    Case(
        "no-data-dir",
        ("submit", "--", *TRAIN),
        "no data directory: outputs would land in the job's temporary working directory",
        env={"GEOLIP_DATA": ""},
    ),
    Case(
        "tracking-uri-relative-sqlite",
        (*SUBMIT, "--tracking-uri", "sqlite:///mlflow.db", "--", *TRAIN),
        "--tracking-uri 'sqlite:///mlflow.db' is not an absolute SQLite path",
    ),
    Case(
        "tracking-uri-file-store",
        (*SUBMIT, "--tracking-uri", "mlruns", "--", *TRAIN),
        "--tracking-uri 'mlruns': expected http(s)://HOST:PORT, postgresql://USER@HOST:PORT/DB, "
        "sqlite:////SHARED/PATH.db",
    ),
    Case(
        "mlflow-tracking-uri-relative",
        (*SUBMIT, "--", *TRAIN),
        "$MLFLOW_TRACKING_URI 'sqlite:///rel.db' is not an absolute SQLite path",
        env={"MLFLOW_TRACKING_URI": "sqlite:///rel.db"},
    ),
    Case("env-no-equals", (*SUBMIT, "--env", "NOPE", "--", *TRAIN), "--env 'NOPE': expected"),
    Case("env-no-key", (*SUBMIT, "--env", "=x", "--", *TRAIN), "--env '=x': expected KEY=VALUE"),
    Case(
        "working-dir-missing",
        (*SUBMIT, "--working-dir", "{tmp}/nope", "--", *TRAIN),
        "--working-dir {tmp}/nope does not exist; expected a directory to upload",
    ),
    Case(
        "working-dir-is-a-file",
        (*SUBMIT, "--working-dir", "{tmp}/f", "--", *TRAIN),
        "--working-dir {tmp}/f is a file",
        setup=a_file,
    ),
    Case(
        "address-ray-client",
        (*SUBMIT, "--address", "ray://head:10001", "--", *TRAIN),
        "--address 'ray://head:10001': expected the job server's http(s)://HOST:8265 (the "
        "dashboard address), not a GCS or client address",
    ),
    Case(
        "address-gcs",
        (*SUBMIT, "--address", "127.0.0.1:6379", "--", *TRAIN),
        "--address '127.0.0.1:6379': expected the job server's http(s)://HOST:8265",
    ),
    Case(
        "address-bad-port",
        (*SUBMIT, "--address", "http://head:port", "--", *TRAIN),
        "--address 'http://head:port': the port is not a number",
    ),
    Case(
        "address-no-host",
        (*SUBMIT, "--address", "http://", "--", *TRAIN),
        "--address 'http://': expected the job server's",
    ),
    Case(
        "runtime-env-missing",
        (*SUBMIT, *ENV_FILE, "--", *TRAIN),
        "--runtime-env {tmp}/env.yaml does not exist",
    ),
    Case(
        "runtime-env-not-yaml",
        (*SUBMIT, *ENV_FILE, "--", *TRAIN),
        "--runtime-env {tmp}/env.yaml is not readable YAML or JSON",
        setup=runtime_env("pip: [a\nenv_vars: {"),
    ),
    Case(
        "runtime-env-list",
        (*SUBMIT, *ENV_FILE, "--", *TRAIN),
        "--runtime-env {tmp}/env.yaml holds a list; expected a mapping",
        setup=runtime_env("- pip\n- numpy\n"),
    ),
    Case(
        "runtime-env-json-string",
        (*SUBMIT, *ENV_FILE, "--", *TRAIN),
        "--runtime-env {tmp}/env.yaml holds a str; expected a mapping",
        setup=runtime_env('"pip"\n'),
    ),
    Case(
        "runtime-env-env-vars-number",
        (*SUBMIT, *ENV_FILE, "--", *TRAIN),
        "--runtime-env {tmp}/env.yaml: env_vars must map names to strings",
        setup=runtime_env("env_vars:\n  OMP_NUM_THREADS: 4\n"),
    ),
    Case(
        "runtime-env-working-dir-missing",
        (*SUBMIT, *ENV_FILE, "--", *TRAIN),
        "--runtime-env {tmp}/env.yaml: working_dir {tmp}/nope does not exist",
        setup=runtime_env("working_dir: {tmp}/nope\n"),
    ),
    Case(
        "entrypoint-cpus-negative",
        (*SUBMIT, "--entrypoint-num-cpus=-1", "--", *TRAIN),
        "argument --entrypoint-num-cpus: must be a finite number >= 0, got '-1'",
    ),
    Case(
        "entrypoint-gpus-nan",
        (*SUBMIT, "--entrypoint-num-gpus", "nan", "--", *TRAIN),
        "argument --entrypoint-num-gpus: must be a finite number >= 0, got 'nan'",
    ),
    Case(
        "entrypoint-gpus-word",
        (*SUBMIT, "--entrypoint-num-gpus", "one", "--", *TRAIN),
        "argument --entrypoint-num-gpus: expected a number, got 'one'",
    ),
    Case(
        "api-server-address-bad",
        (*SUBMIT, "--", *TRAIN),
        "$RAY_API_SERVER_ADDRESS '127.0.0.1:6379': expected the job server's",
        env={"RAY_API_SERVER_ADDRESS": "127.0.0.1:6379", "RAY_ADDRESS": NOWHERE},
    ),
    Case(
        "api-server-address-unreachable",
        (*SUBMIT, "--", *TRAIN),
        f"cannot reach the Ray job server at {NOWHERE}",
        env={"RAY_API_SERVER_ADDRESS": NOWHERE, "RAY_ADDRESS": "http://127.0.0.1:8265"},
    ),
    Case(
        "ray-address-auto",
        (*SUBMIT, "--", *TRAIN),
        "$RAY_ADDRESS 'auto': expected the job server's http(s)://HOST:8265",
        env={"RAY_ADDRESS": "auto"},
    ),
    Case(
        "no-cluster",
        (*SUBMIT, "--", *TRAIN),
        f"cannot reach the Ray job server at {NOWHERE}",
        env=NO_CLUSTER,
    ),
    Case(
        "address-unreachable",
        (*SUBMIT, "--address", NOWHERE, "--", *TRAIN),
        f"cannot reach the Ray job server at {NOWHERE}",
    ),
    Case(
        "submission-refused",
        (*SUBMIT, "--address", "{server}", "--", *TRAIN),
        "refused: Request failed with status code 500",
    ),
]

JOBS_CASES = [
    Case("jobs-no-subcommand", ("jobs",), "the following arguments are required: COMMAND"),
    Case("jobs-unknown", ("jobs", "nope"), "argument COMMAND: invalid choice: 'nope'"),
    Case("jobs-status-no-id", ("jobs", "status"), "required: submission_id"),
    Case("jobs-logs-no-id", ("jobs", "logs"), "required: submission_id"),
    Case("jobs-stop-no-id", ("jobs", "stop"), "required: submission_id"),
    *(
        Case(
            f"jobs-{sub}-no-cluster",
            ("jobs", *argv),
            "cannot reach the Ray job server",
            env=NO_CLUSTER,
        )
        for sub, argv in [
            ("list", ("list",)),
            ("status", ("status", "geolip-x")),
            ("logs", ("logs", "geolip-x")),
            ("stop", ("stop", "geolip-x")),
        ]
    ),
    Case(
        "jobs-status-ray-address-auto",
        ("jobs", "status", "geolip-x"),
        "$RAY_ADDRESS 'auto'",
        env={"RAY_ADDRESS": "auto"},
    ),
    Case(
        "jobs-list-address-gcs",
        ("jobs", "list", "--address", "10.0.0.1:6379"),
        "--address '10.0.0.1:6379': expected the job server's",
    ),
    Case(
        "jobs-status-unknown-id",
        ("jobs", "status", "geolip-x", "--address", "{server}"),
        "jobs status geolip-x: no such job on the Ray job server at {server}",
    ),
    Case(
        "jobs-logs-unknown-id",
        ("jobs", "logs", "geolip-x", "--address", "{server}"),
        "jobs logs geolip-x: no such job",
    ),
    Case(
        "jobs-logs-follow-unknown-id",
        ("jobs", "logs", "geolip-x", "--follow", "--address", "{server}"),
        "jobs logs geolip-x: no such job",
    ),
    Case(
        "jobs-stop-unknown-id",
        ("jobs", "stop", "geolip-x", "--address", "{server}"),
        "jobs stop geolip-x: no such job",
    ),
]

CASES = SUBMIT_CASES + JOBS_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_submit_bad_input(case, fake_server, tmp_path):
    check_case(case, case.argv[0], tmp_path, values={"server": fake_server})


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
