"""A Ray cluster whose autoscaler really adds and removes nodes, on this machine: Ray's own fake
multi-node provider (``ray/autoscaler/_private/fake_multi_node``, ``RAY_FAKE_CLUSTER=1``).

The head is a ``ray start --head --autoscaling-config=FILE --block`` with its own temp dir and
ports and no CPUs (as on KubeRay); its autoscaler (the v1 monitor) starts a worker node of a
node type when a demand needs one, as a raylet of its own process group, and removes it when it
has been idle. Ray's ``AutoscalingCluster`` helper is not used: it runs ``ray stop --force``,
which would stop every Ray on the machine. The v2 autoscaler cannot run here: with the fake
provider it reads ``fake_multi_node/example.yaml``, which the Ray 2.60 wheel does not ship.

Token auth is off for this cluster and its clients (``RAY_AUTH_MODE=disabled`` in
:data:`CLIENT_ENV`): its worker nodes are started by the monitor, and the test needs no token.
Ending the head's process group ends its worker nodes too (they are the monitor's children).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ray_head import RAY, own_port_flags, stop_group, wait_up

from pipelines.runtime import free_port

CLIENT_ENV = {"RAY_AUTH_MODE": "disabled"}
BASE = {
    "cluster_name": "fake_multinode",
    "max_workers": 4,
    "head_node_type": "ray.head.default",
    "auth": {},
    "upscaling_speed": 1.0,
    "docker": {},
    "file_mounts": {},
    "cluster_synced_files": [],
    "file_mounts_sync_continuously": False,
    "rsync_exclude": [],
    "rsync_filter": [],
    **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands")},
    **{key: [] for key in ("worker_setup_commands", "head_start_ray_commands")},
    "worker_start_ray_commands": [],
}


@dataclass(frozen=True)
class FakeCluster:
    """The running cluster: its GCS address (``RAY_ADDRESS`` of a job), dashboard URL and the
    head's temp dir (its worker nodes' logs are there too)."""

    gcs: str
    url: str
    temp_dir: str

    def env(self) -> dict:
        """A job's environment on this cluster (no other Ray's address or token)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return env | CLIENT_ENV | {"RAY_ADDRESS": self.gcs}

    def node_count(self) -> int:
        """Alive nodes, the head included (``ray list nodes`` of the state API)."""
        out = subprocess.run(
            [str(RAY), "list", "nodes", "--address", self.url, "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=self.env(),
        ).stdout
        return sum(1 for n in json.loads(out) if n.get("state") == "ALIVE")


@contextlib.contextmanager
def fake_autoscaling_cluster(
    node_types: dict, idle_minutes: float = 2.0, timeout: float = 120
) -> Iterator[FakeCluster]:
    """Run a 0-CPU head whose autoscaler may add ``node_types`` (autoscaler node type configs:
    ``{"name": {"resources": {...}, "min_workers": 0, "max_workers": n}}``) while the block
    runs."""
    temp = tempfile.mkdtemp(prefix="fa-", dir="/tmp")  # short: Ray's socket paths have a limit
    port, dash = free_port(), free_port()
    gcs = f"127.0.0.1:{port}"
    config = dict(BASE, idle_timeout_minutes=idle_minutes)
    config["provider"] = {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
        "gcs_address": gcs,  # the provider's worker nodes join this head, not a default port
    }
    head = {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0}
    types = {name: {"node_config": {}, **spec} for name, spec in node_types.items()}
    config["available_node_types"] = {"ray.head.default": head, **types}
    config_file = Path(temp) / "autoscaling.json"
    config_file.write_text(json.dumps(config))
    cmd = [str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=0"]
    cmd += ["--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
    cmd += [f"--temp-dir={temp}", "--disable-usage-stats", f"--autoscaling-config={config_file}"]
    cmd += own_port_flags()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | CLIENT_ENV
    env |= {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with open(Path(temp) / "ray-start.log", "ab") as log:
        proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=log)
    cluster = FakeCluster(gcs, f"http://127.0.0.1:{dash}", temp)
    try:
        wait_up(cluster.url, timeout)
        _wait_head(cluster, timeout)
        yield cluster
    finally:
        stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _wait_head(cluster: FakeCluster, timeout: float) -> None:
    """Wait until the state API lists the head as alive and the autoscaler has made its first
    update (until then it publishes no report, and the cluster reads as having none)."""
    monitor_log = Path(cluster.temp_dir) / "session_latest" / "logs" / "monitor.log"
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(subprocess.SubprocessError, ValueError, OSError):
            if "Autoscaler status:" in monitor_log.read_text() and cluster.node_count() >= 1:
                return
        time.sleep(1)
    raise TimeoutError(f"the fake autoscaling head at {cluster.url} did not come up")
