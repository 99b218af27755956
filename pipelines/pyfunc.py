"""The MLflow ``pyfunc`` flavour of geolip checkpoints: what ``mlflow.pyfunc.load_model`` on a
logged AlephLM or SVAE model returns (``pipelines.logged_model`` logs them).

A logged model carries the safetensors checkpoint as its ``checkpoint`` artifact and one of the
``pipelines/model_code`` files as its code ("models from code"), so nothing is pickled: loading
reads the checkpoint with geolip's own loaders.

- AlephLM: a DataFrame with a ``text`` column. ``params={"task": "score"}`` (the default)
  returns ``bits_per_byte`` per row (the windowed regime, as ``geolip eval aleph`` scores);
  ``{"task": "sample", "bytes": N, "temperature": T, "seed": S}`` continues each text.
- SVAE companion: a float array of samples ``[N, ...]`` (images ``[N, C, H, W]`` or feature
  tokens ``[N, T, d]``); returns the external (shell) reconstructions, same shape.
"""

from __future__ import annotations

import mlflow.pyfunc

SCORE, SAMPLE = "score", "sample"
DEFAULT_PARAMS = {"task": SCORE, "bytes": 64, "temperature": 0.8, "seed": 0}


class AlephModel(mlflow.pyfunc.PythonModel):
    """An AlephLM checkpoint that scores or continues text."""

    def load_context(self, context) -> None:
        from geolip.aleph.checkpoint import load_checkpoint

        self.model, self.run_cfg, self.meta = load_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        """``model_input``: DataFrame with ``text`` (or a list of strings) -> DataFrame."""
        import pandas as pd

        texts = _texts(model_input)
        p = {**DEFAULT_PARAMS, **(params or {})}
        if p["task"] == SAMPLE:
            return pd.DataFrame({"text": [self._sample(t, p) for t in texts]})
        if p["task"] != SCORE:
            raise ValueError(f"params task must be {SCORE!r} or {SAMPLE!r}, got {p['task']!r}")
        return pd.DataFrame({"bits_per_byte": [self._score(t) for t in texts]})

    def _score(self, text: str) -> float:
        import numpy as np

        from geolip.aleph.bpb import bpb_windowed

        arr = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        return float(bpb_windowed(self.model, arr).bpb)

    def _sample(self, text: str, p: dict) -> str:
        from geolip.aleph.generate import generate

        prompt = text.encode("utf-8")
        out = generate(
            self.model,
            prompt,
            int(p["bytes"]),
            temperature=float(p["temperature"]),
            seed=int(p["seed"]),
        )
        return (prompt + out).decode("utf-8", errors="replace")


class SVAEModel(mlflow.pyfunc.PythonModel):
    """An SVAE companion checkpoint that reconstructs its inputs."""

    def load_context(self, context) -> None:
        from geolip.svae.checkpoint import load_svae_checkpoint

        self.model, self.geo, self.meta = load_svae_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        """``model_input``: float array ``[N, ...]`` -> reconstructions ``[N, ...]``."""
        import numpy as np
        import torch

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            out = self.model(x)
        return out["external_recon"].numpy()  # the shell's (what the verdict scores)


def _texts(model_input) -> list[str]:
    if hasattr(model_input, "columns"):
        if "text" not in model_input.columns:
            raise ValueError(f"expected a 'text' column, got {list(model_input.columns)}")
        return [str(t) for t in model_input["text"]]
    return [str(t) for t in model_input]
