"""A real multi-node Ray cluster on this machine, for tests: a head and worker nodes, each its
own ``ray start ... --block`` in a process group of its own, with its own temp dir and ports.

The head has no CPUs by default (as on KubeRay), so work lands on the worker nodes only. A
worker node is "lost" by SIGKILLing its process group (:meth:`RayCluster.kill`), which ends its
raylet and everything it started, as a preempted machine would; ``ray stop`` is never used (it
would stop every Ray here). Node start times and kills are recorded for the test's timeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ray_head import RAY, own_port_flags, start_group, stop_group, wait_up

from pipelines.runtime import free_port

# A worker node takes no dashboard nor client server; every other port of its own.
NODE_PORTS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port")
NODE_PORTS += ("runtime-env-agent-port", "node-manager-port", "object-manager-port")


@dataclass
class Node:
    """One ``ray start --block`` of the cluster (its process leads its own group)."""

    name: str
    proc: subprocess.Popen
    temp_dir: str
    started: float
    up: float | None = None
    killed: float | None = None


@dataclass
class RayCluster:
    """A running cluster: the job server's URL, the GCS address, and its nodes."""

    url: str
    gcs: str
    token: str
    """The cluster's auth token (clients send it as ``RAY_AUTH_TOKEN``)."""
    head: Node
    workers: list[Node] = field(default_factory=list)

    def alive_nodes(self) -> list[dict]:
        """The nodes the head sees alive (``/nodes?view=summary`` of the dashboard)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        request = urllib.request.Request(f"{self.url}/nodes?view=summary", headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            summary = json.load(response)["data"]["summary"]
        return [n for n in summary if n.get("raylet", {}).get("state") == "ALIVE"]

    def wait_nodes(self, n: int, timeout: float = 120) -> None:
        """Wait until ``n`` nodes are alive (the head counts as one)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with contextlib.suppress(OSError, KeyError, ValueError):
                if len(self.alive_nodes()) >= n:
                    return
            time.sleep(1)
        raise TimeoutError(f"the Ray cluster at {self.url} did not have {n} nodes in {timeout} s")

    def kill(self, node: Node) -> list[int]:
        """SIGKILL ``node``: its process group, then every process it started that left the
        group (the raylet starts Ray's workers in sessions of their own), as a machine that is
        lost takes everything on it at once. Returns the pids killed."""
        pids = [node.proc.pid, *descendants(node.proc.pid)]
        node.killed = time.time()
        os.killpg(node.proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        node.proc.wait()
        return pids


@contextlib.contextmanager
def ray_cluster(
    workers: int = 2, worker_cpus: int = 2, head_cpus: int = 0, timeout: float = 180
) -> Iterator[RayCluster]:
    """Run a head (``head_cpus``) and ``workers`` worker nodes of ``worker_cpus`` logical CPUs
    each while the block runs; yields the cluster once every node is up."""
    gcs_port, dash = free_port(), free_port()
    temp = _temp_dir("rch-")
    head_cmd = [str(RAY), "start", "--head", "--block", f"--port={gcs_port}"]
    head_cmd += ["--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1"]
    head_cmd += [f"--dashboard-port={dash}", f"--num-cpus={head_cpus}", "--num-gpus=0"]
    head_cmd += [f"--temp-dir={temp}", "--disable-usage-stats", *own_port_flags()]
    # The cluster's own token, given to every node as a cluster manager would: Ray enables token
    # auth on a head only if it finds a token (~/.ray/auth_token comes and goes as other Rays
    # here start), and a worker node that finds none, or another, cannot join.
    token = secrets.token_hex(32)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    head = Node("head", start_group(head_cmd, Path(temp) / "ray-start.log", env), temp, time.time())
    cluster = RayCluster(f"http://127.0.0.1:{dash}", f"127.0.0.1:{gcs_port}", token, head)
    try:
        wait_up(cluster.url, timeout)
        cluster.wait_nodes(1, timeout)
        head.up = time.time()
        for i in range(workers):
            cluster.workers.append(_start_worker(cluster, f"worker-{i + 1}", worker_cpus))
        for i, node in enumerate(cluster.workers):
            cluster.wait_nodes(i + 2, timeout)  # "up": when the cluster had this many nodes
            node.up = time.time()
        yield cluster
    finally:
        _stop(cluster.workers)  # workers first: a head stopped first leaves them retrying it
        _stop([head])


def _stop(nodes: list[Node], grace: float = 10) -> None:
    """SIGTERM every node's group at once, then wait for each (``stop_group``: SIGKILL after
    ``grace`` s). A test cluster has nothing to save, and a graceful stop of three nodes one
    at a time took ~35 s on a loaded 2-core machine."""
    for node in nodes:
        with contextlib.suppress(ProcessLookupError):  # a node the test killed
            os.killpg(node.proc.pid, signal.SIGTERM)
    for node in nodes:
        stop_group(node.proc, grace)


def _start_worker(cluster: RayCluster, name: str, cpus: int) -> Node:
    temp = _temp_dir("rcw-")
    cmd = [str(RAY), "start", f"--address={cluster.gcs}", "--block"]
    cmd += ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0"]
    cmd += [f"--temp-dir={temp}", "--disable-usage-stats", *own_port_flags(NODE_PORTS)]
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    return Node(name, start_group(cmd, Path(temp) / "ray-start.log", env), temp, time.time())


def _temp_dir(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: Ray's socket paths have a limit


def descendants(pid: int) -> list[int]:
    """Every process started by ``pid``, transitively (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])  # after "(comm)": state ppid
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return sorted(found)


def process_title(pid: int) -> str:
    """The command line of ``pid`` (a Ray worker's is its title: ``ray::RayTrainWorker...``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""
