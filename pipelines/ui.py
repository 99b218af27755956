"""``geolip ui``: the MLflow web UI on the project's tracking store.

The store is a SQLite file under the data directory, which a browser cannot read: ``mlflow
server`` serves it (and the runs' plots and checkpoints) over HTTP. ``start_ui`` starts that server
as a child process and waits until it answers; tests use it to drive the UI in a browser.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipelines.aleph.cli import add_common_run_arguments
from pipelines.cli import Command
from pipelines.errors import GeolipError
from pipelines.runtime import free_port

SQLITE_HEADER = b"SQLite format 3\x00"
START_TIMEOUT = 60.0  # the first start imports mlflow and checks the schema: ~10 s on 2 cores
# A local server must not be asked through an http_proxy from the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def port_number(text: str) -> int:
    """An argparse ``type``: a TCP port, 1 to 65535 (the usage error names ``--port``)."""
    try:
        port = int(text)
    except ValueError:
        port = None
    if port is None or not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return port


def check_port(host: str, port: int) -> None:
    """Raise ``GeolipError`` unless ``port`` is valid and ``host:port`` is free to listen on."""
    if not 1 <= port <= 65535:
        raise GeolipError(f"--port {port}: expected a port number from 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        # Like uvicorn: connections in TIME_WAIT do not block the port, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except (OSError, UnicodeError) as e:
            raise _bind_error(host, port, e) from None


def _bind_error(host: str, port: int, e: OSError | UnicodeError) -> GeolipError:
    """What a failed bind means: the port is taken, or ``--host`` is not this machine's."""
    if not isinstance(e, OSError) or isinstance(e, socket.gaierror):
        return GeolipError(
            f"--host {host!r}: no such host name or address; pass an IP address of this "
            "machine such as 127.0.0.1 or 0.0.0.0"
        )
    if e.errno == errno.EADDRNOTAVAIL:
        return GeolipError(
            f"--host {host}: not an address of this machine ({e.strerror}); "
            "pass 127.0.0.1, 0.0.0.0 or one of its interfaces' addresses"
        )
    in_use = e.errno == errno.EADDRINUSE
    reason = "is already in use" if in_use else f"cannot be bound ({e.strerror})"
    return GeolipError(
        f"--port {port}: {host}:{port} {reason}; "
        f"pass --port N (e.g. --port {port + 1 if port < 65535 else 5001}) "
        "or stop what holds it"
    )


def server_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` as a browser on this machine reaches a server bound to ``host``."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# MLflow 3.17's single-page app opens in its GenAI view unless told otherwise; these are the
# routes of the "Model training" view, where runs, metrics and artifacts are.
def experiment_url(url: str, experiment_id: str) -> str:
    """The runs table of an experiment."""
    return f"{url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def run_url(url: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page (``tab``: ``""`` its overview, or ``model-metrics``, ``system-metrics``,
    ``artifacts``)."""
    route = f"experiments/{experiment_id}/runs/{run_id}" + (f"/{tab}" if tab else "")
    return f"{url}/#/{route}"


def registered_model_url(url: str, name: str) -> str:
    """A registered model's page: its versions and where each came from."""
    return f"{url}/#/models/{urllib.parse.quote(name, safe='')}"


def artifact_url(url: str, experiment_id: str, run_id: str, path: str) -> str:
    """A run's artifact browser opened on ``path`` (e.g. ``plots/loss.png``), with its preview."""
    route = f"experiments/{experiment_id}/runs/{run_id}/artifacts/{path}"
    return f"{url}/#/{route}?workflowType=machine_learning"


def start_ui(
    uri: str, data: Path, host: str = "127.0.0.1", port: int = 5000, timeout: float = START_TIMEOUT
) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow server`` on the store ``uri`` and wait until ``/health`` answers.

    Returns the server process and its URL; the caller must stop it with ``stop_ui``. The server
    runs in its own session (process group): uvicorn forks workers that must go with it, and the
    terminal's Ctrl-C reaches only us, so shutdown is ours and orderly. Its output goes to
    ``DATA/mlflow/ui.log``; the last lines are quoted in the error if it dies on start.
    """
    check_port(host, port)
    data = Path(data)
    log_path = data / "mlflow" / "ui.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # geolip's experiments carry absolute file:// artifact locations, which the server reads
    # directly; this destination only receives artifacts of runs created through the server
    # (e.g. experiments made in the UI), which would otherwise land in ./mlartifacts of the cwd.
    served = (data / "mlflow" / "served-artifacts").resolve()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--artifacts-destination",
        served.as_uri(),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Job execution (GenAI evaluation jobs) forks ~7 huey consumers the UI of training runs
    # never uses; they cost memory and CPU on a small machine. Set the variable to re-enable.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # cwd=data: whatever MLflow still writes relative to its cwd lands in the data directory.
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=data,
            start_new_session=True,
        )
    url = server_url(host, port)
    try:
        _wait_healthy(proc, url, timeout, log_path)
    except BaseException:
        stop_ui(proc)
        raise
    return proc, url


def _wait_healthy(proc: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise GeolipError(
                f"mlflow server exited with code {proc.returncode} before answering; "
                f"its last output ({log_path}): {_tail(log_path)}"
            )
        try:
            with _DIRECT.open(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):  # not listening yet
            pass
        time.sleep(0.25)
    raise GeolipError(
        f"mlflow server did not answer {url}/health within {timeout:.0f} s; "
        f"its last output ({log_path}): {_tail(log_path)}"
    )


def _tail(path: Path, lines: int = 5) -> str:
    """The last non-empty lines of ``path`` joined by `` | `` (the CLI prints errors on one line)."""
    text = path.read_text(errors="replace") if path.is_file() else ""
    rows = [row.strip() for row in text.splitlines() if row.strip()]
    return " | ".join(rows[-lines:]) or "(no output)"


def stop_ui(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Stop the server and its workers: SIGTERM to its process group, SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # already gone, workers included
            break
        try:
            proc.wait(timeout=timeout)
            # The group leader may exit before its workers: only stop when none is left.
            os.killpg(proc.pid, 0)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            break
        time.sleep(0.5)
    proc.wait()


@contextmanager
def running_ui(
    uri: str, data: Path, host: str = "127.0.0.1", port: int | None = None
) -> Iterator[str]:
    """``start_ui`` on ``port`` (default: a free one) as a context: yields the URL, then stops."""
    proc, url = start_ui(uri, data, host, free_port(host) if port is None else port)
    try:
        yield url
    finally:
        stop_ui(proc)


def _add(p: argparse.ArgumentParser) -> None:
    add_common_run_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=port_number, default=5000, help="port to listen on (default 5000)"
    )


def _run(args: argparse.Namespace) -> int:
    from pipelines.paths import data_dir
    from pipelines.tracking import resolve_tracking_uri

    data = data_dir(args.data_dir)
    uri = resolve_tracking_uri(args.tracking_uri, data)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow UI: {uri}  (the tracking store is already a server)")
        return 0
    check_store(uri, "--tracking-uri" if args.tracking_uri else "--data-dir")
    check_port(args.host, args.port)  # before anything is written (start_ui checks it again)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` must not orphan the server
    try:
        proc, url = start_ui(uri, data, args.host, args.port)
        print(f"MLflow UI: {url}  (Ctrl-C stops it)", flush=True)
        try:
            code = proc.wait()
        finally:
            stop_ui(proc)
    except KeyboardInterrupt:
        print("MLflow UI stopped", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise GeolipError(f"mlflow server exited with code {code}; see {data / 'mlflow' / 'ui.log'}")


def check_store(uri: str, flag: str) -> Path:
    """The SQLite file of ``uri``, refused on one line unless it is an existing SQLite database
    (``flag``: where the store came from). Nothing is created."""
    from pipelines.paths import check_file_path
    from pipelines.tracking import sqlite_path

    if (db := sqlite_path(uri)) is None:
        raise GeolipError(f"`geolip ui` serves SQLite stores; {uri} has its own UI")
    check_file_path(db, f"{flag}: the MLflow store")
    if not db.is_file():
        raise GeolipError(
            f"no MLflow store at {db}; run `geolip demo` (or any training command) first, "
            "or pass --data-dir/--tracking-uri"
        )
    with open(db, "rb") as fh:
        header = fh.read(16)
    if header and header != SQLITE_HEADER:
        raise GeolipError(f"{flag}: the MLflow store {db} is not an SQLite database")
    return db


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


COMMANDS = [Command("ui", "serve the MLflow web UI on the project's tracking store", _add, _run)]
