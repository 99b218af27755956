"""A training run's per-target held-out NLL in MLflow: written by the worker's final evaluation,
read back by the sweep summaries for their paired Δ ± SE (``geolip.paired``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

ARTIFACT_DIR = "heldout"
TARGET_NLL = "target_nll.safetensors"
"""``heldout/target_nll.safetensors``: ``{"nll": float32[n]}``, the NLL in nats of each held-out
target trigram 1..n of the windowed regime, in order."""


def write_target_nll(logger, nll, eval_bytes: int) -> None:
    """Log ``nll: [n]`` (a torch tensor) to ``logger``'s run."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / TARGET_NLL
        meta = {"unit": "nats per target trigram", "eval_bytes": str(eval_bytes)}
        save_file({"nll": nll.float().contiguous()}, str(path), metadata=meta)
        logger.log_artifact(path, ARTIFACT_DIR)


def read_target_nll(uri: str, run_id: str) -> np.ndarray | None:
    """The run's per-target NLL (``float64[n]``, nats), or None for a run without one (from
    before this artifact, or one that never reached its final evaluation)."""
    from safetensors.numpy import load_file

    from pipelines.tracking import client

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client(uri).download_artifacts(run_id, f"{ARTIFACT_DIR}/{TARGET_NLL}", tmp)
        except Exception:  # MLflow raises its own (and OSError) for a missing artifact
            return None
        return load_file(local)["nll"].astype(np.float64)
