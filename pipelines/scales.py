"""Run sizes: one ``--scale`` vocabulary for ``geolip train``, ``geolip sweep`` and ``geolip demo``.

A scale names a model preset and the budget of one training run at that size. The layers above
add their own budgets under the same names (a sweep's trials: ``tune.spec.SWEEP_SCALES``; the
demo's stages: ``demo.scales.DEMO_SCALES``), so ``--scale tiny`` means the tiny preset everywhere,
and ``geolip train aleph --scale tiny`` is the same 1,500-step run as a tiny demo's training
stages. A sweep's trials use the scale's preset with their own, shorter per-trial budgets.

- ``smoke``: every code path in seconds (the tests' scale).
- ``tiny``: minutes on 2 CPU cores, the default.
- ``small``: the 6.75M survey model at its survey budget (exp_010), for one GPU.
- ``full``: the same model at the model card's budgets (exp_007, 10k steps).
- ``calib23m``: the 23M streamed calibration model (8k steps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from geolip.aleph.config import AlephRunConfig
from geolip.aleph.presets import get_preset, with_head
from geolip.config import ConfigError, apply_overrides


@dataclass(frozen=True)
class Scale:
    """The model preset and the budget of one training run of a ``--scale``."""

    name: str
    preset: str
    """Model preset (``geolip.aleph.presets``)."""
    steps: int
    log_every: int
    eval_windows: int
    """Fixed held-out windows behind ``val_bpb``."""
    eval_bytes: int
    """Held-out bytes the windows are cut from and the final bits/byte is scored on."""

    def run_config(self, head: str = "pmix", sets: Sequence[str] = ()) -> AlephRunConfig:
        """The run config of one run at this scale with ``head``, then ``--set`` overrides."""
        run = get_preset(self.preset)
        train = dataclasses.replace(
            run.train, steps=self.steps, log_every=self.log_every, eval_windows=self.eval_windows
        )
        run = with_head(dataclasses.replace(run, train=train), head)
        return apply_overrides(run, list(sets))


SCALES: dict[str, Scale] = {
    "smoke": Scale("smoke", "tiny", steps=8, log_every=4, eval_windows=4, eval_bytes=20_000),
    "tiny": Scale("tiny", "tiny", steps=1500, log_every=50, eval_windows=8, eval_bytes=100_000),
    "small": Scale(
        "small", "small", steps=5000, log_every=50, eval_windows=16, eval_bytes=1_000_000
    ),
    "full": Scale(
        "full", "small", steps=10_000, log_every=50, eval_windows=16, eval_bytes=4_000_000
    ),
    "calib23m": Scale(
        "calib23m", "calib23m", steps=8000, log_every=50, eval_windows=16, eval_bytes=4_000_000
    ),
}
SCALE_NAMES = tuple(SCALES)


def get_scale(name: str) -> Scale:
    """The scale ``name``; an unknown name raises a ConfigError listing the scales."""
    if name not in SCALES:
        raise ConfigError(f"unknown --scale {name!r}; scales: {', '.join(SCALES)}")
    return SCALES[name]
