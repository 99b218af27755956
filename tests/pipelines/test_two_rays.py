"""A local job beside another Ray on the same machine: it starts and uses a Ray of its own,
deterministically, and prints none of Ray's "Found multiple active Ray instances" noise.

Two other Rays run here while the job does: a ``ray start --head`` of the test's own, and the
test session's Ray when an earlier test started it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ray_head import ray_head

pytestmark = pytest.mark.slow
GEOLIP = str(Path(sys.executable).with_name("geolip"))


def test_a_training_beside_another_ray_uses_its_own_quietly(tmp_path):
    argv = [GEOLIP, "train", "aleph", "--corpus", "builtin:tiny", "--scale", "smoke"]
    argv += ["--workers", "1"]
    argv += ["--set", "train.steps=10", "--set", "train.log_every=5"]
    argv += ["--data-dir", str(tmp_path / "data")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    with ray_head() as head:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
        )
        jobs = _drivers(head)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Found multiple active Ray instances" not in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert (tmp_path / "data" / "runs" / "aleph").is_dir()
    assert jobs == [], f"the job joined the other Ray: {jobs}"


def _drivers(url: str) -> list[str]:
    """The driver jobs the Ray at dashboard ``url`` has seen (``ray list jobs``; the head has
    token auth on, and Ray's clients send its token only in token mode)."""
    import json

    out = subprocess.run(
        [str(Path(sys.executable).with_name("ray")), "list", "jobs", "--address", url]
        + ["--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=os.environ | {"RAY_AUTH_MODE": "token"},
    ).stdout.strip()
    if out.startswith("No resource"):  # Ray's way of printing an empty list
        return []
    return [job.get("job_id") for job in json.loads(out)]
