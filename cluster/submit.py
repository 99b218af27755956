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

As ``ray job submit`` does, it waits for the job (streaming its logs) unless ``--no-wait``, finds
the job server at ``--address``, ``$RAY_API_SERVER_ADDRESS`` or ``$RAY_ADDRESS``, takes a
``--runtime-env`` YAML/JSON file (merged under the env it sets itself) and the entrypoint's own
resources (``--entrypoint-num-cpus/-gpus``).
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
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import GeolipError
from pipelines.tracking import redacted

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
    wait: bool = True
    working_dir: str | None = None
    data_dir: str | None = None
    tracking_uri: str | None = None
    submission_id: str | None = None
    env: dict = field(default_factory=dict)
    runtime_env_file: str | None = None
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None


# Where Ray's job CLI looks for the job server, in its order (after --address).
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


def resolve_address(address: str | None) -> str:
    """The job server's URL: ``--address``, else ``$RAY_API_SERVER_ADDRESS``, else
    ``$RAY_ADDRESS``, else the local default; anything but ``http(s)://HOST[:PORT]`` is refused
    naming where it came from."""
    source, raw = "--address", address
    for name in ADDRESS_VARIABLES:
        if not raw and os.environ.get(name):
            source, raw = f"${name}", os.environ[name]
    raw = raw or DEFAULT_ADDRESS
    expected = "expected the job server's http(s)://HOST:8265 (the dashboard address)"
    if raw.startswith("ray://") or not raw.startswith(("http://", "https://")):
        raise SubmitError(f"{source} {raw!r}: {expected}, not a GCS or client address")
    url = urllib.parse.urlsplit(raw)
    try:
        url.port  # noqa: B018 (parses the port: a bad one raises)
    except ValueError:
        raise SubmitError(f"{source} {raw!r}: the port is not a number from 0 to 65535") from None
    if not url.hostname or url.query or url.fragment:
        raise SubmitError(f"{source} {raw!r}: {expected}")
    return raw.rstrip("/")


def client(address: str | None):
    """A ``JobSubmissionClient``; an unreachable server or a refused token is a one-line error."""
    url = resolve_address(address)  # a malformed address fails before Ray is imported
    from ray.job_submission import JobSubmissionClient

    token = _token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(url, headers=headers)
    except Exception as exc:  # ConnectionError, auth RuntimeError: say which and how to fix
        raise SubmitError(_connection_error(url, exc)) from exc


@contextlib.contextmanager
def job_errors(what: str, address: str | None):
    """Turn a job server's refusal (an unknown submission id, a lost connection) into one
    ``SubmitError`` line naming ``what`` was asked (``jobs status ID``, ...)."""
    try:
        yield
    except SubmitError:
        raise
    except Exception as exc:  # RuntimeError("Request failed with status code 404: ..."), ...
        text = " ".join(str(exc).split())[:300]
        if re.search(r"\b404\b|does not exist", text):
            text = f"no such job on the Ray job server at {resolve_address(address)}"
        raise SubmitError(f"{what}: {text}") from exc


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
    return (
        f"cannot reach the Ray job server at {url}: {text[:300]} (pass --address "
        "http(s)://HOST:8265 or set $RAY_ADDRESS to the cluster's dashboard address)"
    )


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
    commands = load_commands()
    top = sorted({c.name.split()[0] for c in commands})
    if not argv[0].startswith("-") and argv[0] not in top:
        raise SubmitError(
            f"not a geolip command: {argv[0]!r}; expected `geolip submit -- geolip COMMAND ...` "
            f"with COMMAND one of {', '.join(top)}"
        )
    args = _parse(build_parser(commands), argv)
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
        _check_tracking_uri(uri, "--tracking-uri" if sub.tracking_uri else "$MLFLOW_TRACKING_URI")
        env["MLFLOW_TRACKING_URI"] = uri
    if not data and not getattr(args, "out", None):
        raise SubmitError(
            "no data directory: outputs would land in the job's temporary working directory; "
            "pass --data-dir /shared/path to geolip submit (or to the command)"
        )
    return argv, env


def _check_tracking_uri(uri: str, source: str) -> None:
    """A job's store must be reachable from the cluster: a server, or SQLite at an absolute
    path on shared storage (a relative one lands in the job's temporary working directory)."""
    if uri.startswith("sqlite:") and not uri.startswith("sqlite:////"):
        raise SubmitError(
            f"{source} {uri!r} is not an absolute SQLite path: use sqlite:////SHARED/PATH.db "
            "or the cluster's http(s)://MLFLOW-SERVER:5000"
        )
    if not re.match(
        r"^(sqlite|https?|databricks|postgresql(\+psycopg)?|mysql(\+pymysql)?)(:|$)", uri
    ):
        raise SubmitError(
            f"{source} {redacted(uri)!r}: expected http(s)://HOST:PORT, "
            "postgresql://USER@HOST:PORT/DB, sqlite:////SHARED/PATH.db or databricks"
        )


def _parse(parser, argv: list[str]):
    """argparse's namespace, or its complaint as a SubmitError (it would print and exit)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return parser.parse_args(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        reason = lines[-1] if lines else "it only prints help"
        reason = reason.removeprefix("geolip: error: ")  # the CLI prints its own prefix
        raise SubmitError(f"not a valid geolip command: {reason}") from None


def _absolute_or_uri(value: str) -> bool:
    return value.startswith("/") or bool(re.match(r"^[a-z][a-z0-9+.-]*://", value))


def submit(sub: Submission, progress=print) -> int:
    """Submit; with ``wait`` stream the logs and return 0 if the job succeeded, else 1."""
    argv, env = check_command(sub)
    runtime_env = job_runtime_env(sub, env)
    if runtime_env.get("working_dir"):
        entry = ["python", "-m", "pipelines", *argv]  # the uploaded code, not an installed one
    else:
        entry = ["geolip", *argv]
    resources = {
        k: v
        for k, v in (
            ("entrypoint_num_cpus", sub.entrypoint_num_cpus),
            ("entrypoint_num_gpus", sub.entrypoint_num_gpus),
        )
        if v is not None
    }
    resolve_address(sub.address)  # every check before connecting
    jobs = client(sub.address)
    entrypoint = shlex.join(entry)
    with job_errors("submit", sub.address):
        sid = sub.submission_id or _stable_id(jobs, argv, env)
    metadata = {"geolip_command": shlex.join(argv)}
    _submit_when_ready(
        jobs,
        sid,
        entrypoint=entrypoint,
        runtime_env=runtime_env or None,
        submission_id=sid,
        metadata=metadata,
        **resources,
    )
    progress(f"submitted {sid}: {entrypoint}")
    if not sub.wait:
        progress(f"follow it with: geolip jobs logs {sid} --follow")
        return 0
    return follow(jobs, sid, progress)


def job_runtime_env(sub: Submission, env: dict) -> dict:
    """The job's runtime env: ``--runtime-env``'s, with the env vars this command sets (data
    directory, tracking URI, ``--env``) over its ``env_vars`` and ``--working-dir`` over its
    ``working_dir``; a local ``working_dir`` must be a directory here (Ray uploads it)."""
    runtime_env = load_runtime_env(sub.runtime_env_file) if sub.runtime_env_file else {}
    merged = {**runtime_env.get("env_vars", {}), **env}
    if merged:
        runtime_env["env_vars"] = merged
    if sub.working_dir:
        runtime_env["working_dir"] = str(check_working_dir(sub.working_dir))
    elif isinstance(local := runtime_env.get("working_dir"), str) and "://" not in local:
        source = f"--runtime-env {sub.runtime_env_file}: working_dir"
        runtime_env["working_dir"] = str(check_working_dir(local, source))
    return runtime_env


def load_runtime_env(path: str) -> dict:
    """``--runtime-env FILE``: a YAML (or JSON, a subset of YAML) mapping, as ``ray job submit``
    takes it; a missing file, bad syntax or anything but a mapping is one line naming it."""
    import yaml  # Ray's own dependency

    flag = f"--runtime-env {path}"
    try:
        data = yaml.safe_load(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SubmitError(f"{flag} does not exist") from None
    except IsADirectoryError:
        raise SubmitError(f"{flag} is a directory; expected a YAML or JSON file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise SubmitError(f"{flag} is not readable YAML or JSON: {reason}") from None
    expected = "expected a mapping such as {pip: [...], env_vars: {KEY: VALUE}}"
    if not isinstance(data, dict):
        raise SubmitError(f"{flag} holds a {type(data).__name__}; {expected}")
    env_vars = data.get("env_vars", {})
    if not isinstance(env_vars, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
    ):
        raise SubmitError(f"{flag}: env_vars must map names to strings (quote numbers)")
    return data


def check_working_dir(path: str, source: str = "--working-dir") -> Path:
    """``--working-dir`` (or ``source``): an existing directory here (Ray uploads it)."""
    wd = Path(path).expanduser().resolve()
    if not wd.exists():
        raise SubmitError(f"{source} {path} does not exist; expected a directory to upload")
    if not wd.is_dir():
        raise SubmitError(f"{source} {path} is a file; expected a directory to upload")
    return wd


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
