"""``geolip submit``: any ``geolip`` command as a Ray job on a running cluster.

The command is checked here first (it must parse as a ``geolip`` command, and every output path
must be absolute: a job runs in a temporary working directory that disappears with it). The data
directory and tracking URI travel in the job's runtime env (``GEOLIP_DATA``,
``MLFLOW_TRACKING_URI``), so outputs land on the cluster's shared storage. With
``--working-dir`` the directory is uploaded and the job runs ``python -m pipelines`` from it;
without, the cluster's image must have geolip installed and the job runs ``geolip``.

Submission ids are stable: ``geolip-<command>-<hash of command and env>``, with ``-2``, ``-3``...
when that command was submitted before, so the same command is easy to find in ``geolip jobs``.
Token authentication is Ray's: ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token`` (``RAY_AUTH_MODE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import GeolipError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
AGENT_WAIT_S = 90.0  # how long a fresh cluster may take to have a job agent
# Flags whose values are paths a job writes or reads on the cluster.
PATH_FLAGS = ("out", "data_dir", "atlas", "checkpoint", "init_from", "bank", "donor")


class SubmitError(GeolipError):
    """A job that cannot be submitted or followed; the message says what to change."""


@dataclass(frozen=True)
class Submission:
    command: tuple[str, ...]
    address: str | None = None
    wait: bool = False
    working_dir: str | None = None
    data_dir: str | None = None
    tracking_uri: str | None = None
    submission_id: str | None = None
    env: dict = field(default_factory=dict)


def resolve_address(address: str | None) -> str:
    raw = address or os.environ.get("RAY_ADDRESS") or DEFAULT_ADDRESS
    if raw.startswith("ray://") or not raw.startswith(("http://", "https://")):
        raise SubmitError(
            f"--address {raw!r}: expected the job server's http(s)://HOST:8265 (the dashboard "
            "address), not a GCS or client address"
        )
    return raw.rstrip("/")


def client(address: str | None):
    """A ``JobSubmissionClient``; an unreachable server or a refused token is a one-line error."""
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    token = _token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(url, headers=headers)
    except Exception as exc:  # ConnectionError, auth RuntimeError: say which and how to fix
        raise SubmitError(_connection_error(url, exc)) from exc


def _token() -> str | None:
    """The cluster token, sent whenever there is one: ``RAY_AUTH_TOKEN``, the file named by
    ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token`` (where ``ray start`` writes it).

    Sent explicitly because Ray's client only sends it when ``RAY_AUTH_MODE=token`` is set in
    the client's environment (a fresh local head enables token auth without that), and its
    loader caches the first token it finds.
    """
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _connection_error(url: str, exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if re.search(r"\b40[13]\b|[Aa]uthenticat|[Uu]nauthori[sz]ed|[Ff]orbidden", text):
        return (
            f"the Ray cluster at {url} refused the authentication token; set RAY_AUTH_TOKEN "
            "(or ~/.ray/auth_token) to the cluster's token"
        )
    return f"cannot reach the Ray job server at {url}: {text[:300]}"


def check_command(sub: Submission) -> tuple[list[str], dict]:
    """The entrypoint argv and runtime env of ``sub``; raises on anything that would misfire."""
    from pipelines.cli import build_parser, load_commands

    argv = list(sub.command)
    if argv and argv[0] == "geolip":
        argv = argv[1:]
    if not argv:
        raise SubmitError(
            "nothing to submit: give a geolip command after --, e.g. "
            "geolip submit -- geolip train aleph --corpus builtin:tiny"
        )
    args = _parse(build_parser(load_commands()), argv)
    for flag in PATH_FLAGS:
        value = getattr(args, flag, None)
        if value and not _absolute_or_uri(value):
            raise SubmitError(
                f"--{flag.replace('_', '-')} {value} is relative: on the cluster it would land "
                "in the job's temporary working directory; use an absolute path on shared storage"
            )
    data = sub.data_dir or getattr(args, "data_dir", None) or os.environ.get("GEOLIP_DATA")
    if data and not _absolute_or_uri(data):
        raise SubmitError(f"--data-dir {data} is relative; use an absolute path on shared storage")
    env = dict(sub.env)
    if sub.data_dir:
        env["GEOLIP_DATA"] = sub.data_dir
    uri = sub.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    if not data and not getattr(args, "out", None):
        raise SubmitError(
            "no data directory: outputs would land in the job's temporary working directory; "
            "pass --data-dir /shared/path to geolip submit (or to the command)"
        )
    return argv, env


def _parse(parser, argv: list[str]):
    """argparse's namespace, or its complaint as a SubmitError (it would print and exit)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        reason = lines[-1] if lines else "it only prints help"
        raise SubmitError(f"not a valid geolip command: {reason}") from None


def _absolute_or_uri(value: str) -> bool:
    return value.startswith("/") or bool(re.match(r"^[a-z][a-z0-9+.-]*://", value))


def submit(sub: Submission, progress=print) -> int:
    """Submit; with ``wait`` stream the logs and return 0 if the job succeeded, else 1."""
    argv, env = check_command(sub)
    jobs = client(sub.address)
    runtime_env: dict = {"env_vars": env} if env else {}
    if sub.working_dir:
        wd = Path(sub.working_dir).expanduser().resolve()
        if not wd.is_dir():
            raise SubmitError(f"--working-dir {sub.working_dir}: not a directory")
        runtime_env["working_dir"] = str(wd)
        entry = ["python", "-m", "pipelines", *argv]  # the uploaded code, not an installed one
    else:
        entry = ["geolip", *argv]
    entrypoint = shlex.join(entry)
    sid = sub.submission_id or _stable_id(jobs, argv, env)
    metadata = {"geolip_command": shlex.join(argv)}
    _submit_when_ready(
        jobs,
        sid,
        entrypoint=entrypoint,
        runtime_env=runtime_env or None,
        submission_id=sid,
        metadata=metadata,
    )
    progress(f"submitted {sid}: {entrypoint}")
    if not sub.wait:
        progress(f"follow it with: geolip jobs logs {sid} --follow")
        return 0
    return follow(jobs, sid, progress)


def _submit_when_ready(jobs, sid: str, wait_s: float = AGENT_WAIT_S, **kwargs) -> None:
    """``submit_job``, retried while the cluster has no job agent yet (a head that has just
    started answers "No available agent to submit job" for some seconds)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            jobs.submit_job(**kwargs)
            return
        except Exception as exc:
            text = " ".join(str(exc).split())
            if "No available agent" in text and time.monotonic() < deadline:
                time.sleep(2)
                continue
            raise SubmitError(f"submission {sid} refused: {text[:300]}") from exc


def _stable_id(jobs, argv: list[str], env: dict) -> str:
    words = [a for a in argv[:2] if not a.startswith("-")]
    slug = "-".join(re.sub(r"[^a-z0-9]+", "-", w.lower()).strip("-") for w in words)
    digest = hashlib.sha256(json.dumps([argv, env], sort_keys=True).encode()).hexdigest()[:8]
    base = f"geolip-{slug}-{digest}"
    taken = {j.submission_id for j in jobs.list_jobs()}
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def follow(jobs, sid: str, progress=print, tail_lines: int = 40) -> int:
    """Stream ``sid``'s logs until it ends; 0 if it succeeded, else 1 with its log's tail."""

    async def stream() -> None:
        async for chunk in jobs.tail_job_logs(sid):
            print(chunk, end="", flush=True)

    asyncio.run(stream())
    status = str(jobs.get_job_status(sid).value)
    if status == "SUCCEEDED":
        progress(f"job {sid} succeeded")
        return 0
    info = jobs.get_job_info(sid)
    tail = "\n".join(jobs.get_job_logs(sid).splitlines()[-tail_lines:])
    progress(
        f"job {sid} {status}: {info.message or ''}\n--- last {tail_lines} log lines ---\n{tail}"
    )
    return 1
