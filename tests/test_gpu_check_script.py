"""``make gpu-check``'s script runs its checks and writes its report on whatever device there is:
here, on the CPU, every check but the CUDA-only fla kernel passes and the report is whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_a_cpu_and_writes_json_and_markdown(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--device", "cpu", "--quick"]
    p = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {c["check"]: c["status"] for c in doc["checks"]}
    assert status.pop("attn_impl=fla = oracle") == "n/a"
    assert len(status) == 6 and set(status.values()) == {"PASS"}, doc["checks"]
    bench = doc["benchmark"]
    assert [r["T"] for r in bench["attention fwd+bwd, one 23M-tier layer"]] == [256, 512]
    assert all(r["aleph ms/token"] > 0 for r in bench["decode, 8 layers"])
    assert bench["training"][0]["bytes/s"] > 0
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| train.compile parity | PASS |" in md and "## decode, 8 layers" in md
    assert not list(tmp_path.glob(".*.tmp")), "a temporary file was left behind"
