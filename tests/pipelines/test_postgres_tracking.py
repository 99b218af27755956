"""A team's MLflow on PostgreSQL: a store that refuses is one line with its password hidden.

A training logging to a real PostgreSQL directly (``--tracking-uri postgresql://...``) and a
two-trial sweep through an ``mlflow server`` on it: ``tests/pipelines/test_team_stack.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
GEOLIP = str(Path(sys.executable).with_name("geolip"))
TINY = ["--corpus", "builtin:tiny", "--set", "train.steps=10", "--set", "train.log_every=5"]


def test_a_store_that_refuses_is_one_line_without_its_password(tmp_path):
    uri = "postgresql://geolip:s3cret@127.0.0.1:9/postgres"
    proc = subprocess.run(
        [GEOLIP, "train", "aleph", *TINY, "--tracking-uri", uri],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("geolip: error: cannot open the MLflow store")
    assert "postgresql://geolip:***@127.0.0.1:9/postgres" in lines[0]
    assert "s3cret" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []
