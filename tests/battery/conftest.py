"""Fixtures the bad-input battery modules share: a tiny saved AlephLM checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Built in a child interpreter from the installed package: under a bare ``pytest`` the tests'
# own ``tests/geolip`` directory can shadow the ``geolip`` package in this process.
BUILD = """
import sys
import torch
from geolip.aleph.bank import bank_from_bytes, save_bank
from geolip.aleph.checkpoint import save_checkpoint
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head

out = sys.argv[1]
run_cfg = with_head(tiny(), "pmix")
torch.manual_seed(0)
bank = bank_from_bytes(b"the cat sat on the mat and the dog sat on the log " * 20, 64)
save_checkpoint(out, AlephLM(run_cfg.model, bank), run_cfg)
other = bank_from_bytes(b"a different text for another bank " * 30, 32)
save_bank(other, out + "-other-bank.safetensors")
"""


def build_checkpoint(out: Path) -> Path:
    """A saved tiny pmix checkpoint at ``out`` (and another bank at ``out-other-bank...``)."""
    subprocess.run([sys.executable, "-c", BUILD, str(out)], check=True, cwd=out.parent, timeout=120)
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A saved tiny pmix checkpoint (weights, config, bank, meta), built once per module by
    ``build_checkpoint``."""
    return build_checkpoint(tmp_path_factory.mktemp("source") / "ck")
