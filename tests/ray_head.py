"""A real Ray head for tests: ``ray start --head --block`` on 127.0.0.1 with ports of its own.

The head gets its own temp dir and every port Ray would otherwise take by default (the session's
own Ray holds those: a head beside it could not bind its job agent), so it can run beside any
other Ray on the machine. It is stopped by ending its process group (``ray stop`` would stop
every Ray here).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from pipelines.runtime import free_port

RAY = Path(sys.executable).with_name("ray")
OWN_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "ray-client-server-port",
)


@contextlib.contextmanager
def ray_head(num_cpus: int = 2, timeout: float = 120) -> Iterator[str]:
    """Run a Ray head while the block runs; yields its dashboard URL (the job server's)."""
    temp = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # short: Ray's socket paths have a limit
    dash = free_port()
    cmd = [
        str(RAY),
        "start",
        "--head",
        "--block",
        f"--port={free_port()}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
        *own_port_flags(),
    ]
    proc = start_group(cmd)
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_up(url, timeout)
        yield url
    finally:
        stop_group(proc)


def own_port_flags(flags: tuple[str, ...] = OWN_PORTS) -> list[str]:
    """``--FLAG=PORT`` with a free port for each of Ray's ports that would default to a fixed one."""
    return [f"--{flag}={free_port()}" for flag in flags]


def start_group(
    cmd: list[str], log: Path | None = None, env: dict | None = None
) -> subprocess.Popen:
    """Start ``cmd`` (a ``ray start ... --block``) in a process group of its own, with ``env``
    over this process's; its output goes to ``log`` if given."""
    env = {k: v for k, v in (os.environ | (env or {})).items() if k != "RAY_ADDRESS"}
    # The head's jobs run `python` from its PATH: this environment's, as on an image.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (the child's)
    try:
        return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=out)
    finally:
        if log is not None:
            out.close()


def stop_group(proc: subprocess.Popen, grace: float = 5) -> None:
    """End the process group of ``proc`` (SIGTERM, then SIGKILL after ``grace`` seconds: a test's node has nothing to save, and a
    graceful Ray shutdown takes half a minute)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:  # the whole group is gone already (a node the test killed)
        proc.wait()
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:  # a loaded machine: do not leave the node behind
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_up(url: str, timeout: float) -> None:
    """Wait until the head's dashboard answers (401/403 under token auth also means up)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            return
        except OSError as exc:
            if getattr(exc, "code", None) in (401, 403):
                return
            time.sleep(1)
    raise TimeoutError(f"the Ray head's dashboard at {url} did not come up in {timeout:.0f} s")
