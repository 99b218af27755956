"""Is the aleph employed? A permute and a randomize contrast with a paired standard error.

Run at the end of every AlephLM training on the run's fixed held-out windows (seconds at tiny
scale). Each window is scored by the trained model and by two ablated copies (spec §10):
``permute`` (a seeded row permutation: an exact symmetry of every index-contracted path, §10.2)
and ``randomize`` (a fresh random frame: it changes the geometry routing reads). The Δbpb of each
is the mean over windows of the per-window difference, so its standard error is paired over the
identical windows. The verdict ``[proposed]``:

- ``closed loop``: Δpermute is significant. The prediction path reads codebook rows by index
  (the kernel head's per-axis emission keys), so prediction error reaches the codebook.
- ``open loop``: Δpermute is within noise but Δrandomize is significant. The geometry is used
  (routing through the hubs, or an index-free head) but no path is bound to axis identity.
- ``not employed``: both are within noise; the codebook could be any frame.

"Significant" is ``Δ > z·SE`` and ``Δ > min_delta`` (the floor keeps fp reorder noise, ~1e-6
bpb, from reading as a closed loop when the SE is itself that small).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from geolip.aleph.bpb import window_bpb
from geolip.aleph.experiments.contrast import ablate

VERDICTS = ("closed loop", "open loop", "not employed")


@dataclass(frozen=True)
class PairedDelta:
    """Δbpb of one ablation: the mean over windows of ``bpb_ablated − bpb_base`` and its SE."""

    mean: float
    se: float
    windows: int

    def significant(self, z: float, min_delta: float) -> bool:
        return self.mean > z * self.se and self.mean > min_delta


@dataclass(frozen=True)
class Employment:
    """The employment contrast of one model on fixed windows."""

    base_bpb: float
    permute: PairedDelta
    randomize: PairedDelta
    z: float = 2.0
    min_delta: float = 1e-4

    @property
    def verdict(self) -> str:
        if self.permute.significant(self.z, self.min_delta):
            return "closed loop"
        if self.randomize.significant(self.z, self.min_delta):
            return "open loop"
        return "not employed"

    def as_metrics(self) -> dict[str, float]:
        """MLflow metrics: ``employ_{permute,randomize}_delta`` / ``_se`` and the base bpb."""
        out = {"employ_base_bpb": self.base_bpb, "employ_windows": float(self.permute.windows)}
        for name in ("permute", "randomize"):
            d: PairedDelta = getattr(self, name)
            out[f"employ_{name}_delta"] = d.mean
            out[f"employ_{name}_se"] = d.se
        return out

    @classmethod
    def from_metrics(cls, metrics: dict, z: float = 2.0, min_delta: float = 1e-4):
        """The inverse of :meth:`as_metrics` (a run's logged figures); None without them."""
        if "employ_permute_delta" not in metrics:
            return None
        n = int(metrics["employ_windows"])
        p, r = (
            PairedDelta(metrics[f"employ_{op}_delta"], metrics[f"employ_{op}_se"], n)
            for op in ("permute", "randomize")
        )
        return cls(metrics["employ_base_bpb"], p, r, z, min_delta)

    def summary(self) -> str:
        """One line: the verdict with each Δ ± SE."""
        p, r = self.permute, self.randomize
        return (
            f"{self.verdict} (Δpermute {p.mean:+.4f} ± {p.se:.4f}, "
            f"Δrandomize {r.mean:+.4f} ± {r.se:.4f} bpb over {p.windows} windows)"
        )


def paired_delta(base: torch.Tensor, ablated: torch.Tensor) -> PairedDelta:
    """Mean and standard error of ``ablated − base`` over the same windows (``[n]`` each)."""
    d = ablated - base
    n = d.numel()
    se = float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.inf
    return PairedDelta(float(d.mean()), se, n)


def employment(
    model, batches: list[torch.Tensor], seed: int = 0, z: float = 2.0, min_delta: float = 1e-4
) -> Employment:
    """The permute and randomize contrast of ``model`` on fixed windows ``batches``."""
    base = window_bpb(model, batches)
    deltas = {
        op: paired_delta(base, window_bpb(ablate(model, op, seed, "all"), batches))
        for op in ("permute", "randomize")
    }
    return Employment(float(base.mean()), deltas["permute"], deltas["randomize"], z, min_delta)
