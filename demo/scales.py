"""The demo's budgets under the one ``--scale`` vocabulary (``pipelines.scales``).

A demo scale adds what only the demo has (atlas and bank sizes, contrast and sample budgets, the
feature and SVAE stages) to the training run of the same name (``pipelines.scales.SCALES``) and
the sweep scale of the same name (``tune.spec.SWEEP_SCALES``): ``geolip demo --scale tiny`` trains
exactly what ``geolip train aleph --scale tiny`` trains, and its sweep is
``geolip sweep preservation --scale tiny``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.errors import GeolipError
from pipelines.scales import SCALES, Scale
from tune.spec import SWEEP_SCALES, SweepScale


@dataclass(frozen=True)
class DemoScale:
    """Budgets of one ``geolip demo --scale`` beyond its training run and its sweep."""

    name: str
    atlas_target: int
    bank_size: int
    contrast_seeds: int
    contrast_windows: int
    sample_bytes: int
    prime_bytes: int
    """Train bytes that prime the compressor baselines."""
    feature_sentences: int
    svae_train: dict = field(default_factory=dict)
    """``train.*`` changes of the SVAE runs (``SVAETrainConfig`` fields and typed values)."""
    svae_control: bool = True
    """Also fit the SVAE's patch-shuffled control (§14)."""
    sweep_arms: tuple[str, ...] = ("apmix/free", "apmix/spread")

    @property
    def train(self) -> Scale:
        """The training run of each AlephLM stage."""
        return SCALES[self.name]

    @property
    def sweep(self) -> SweepScale:
        """The sweep stage's trial budgets and seeds."""
        return SWEEP_SCALES[self.name]


DEMO_SCALES: dict[str, DemoScale] = {
    # The tests': every stage, a few steps each (~4 min on 2 CPUs).
    "smoke": DemoScale(
        "smoke",
        atlas_target=20_000,
        bank_size=512,
        contrast_seeds=1,
        contrast_windows=8,
        sample_bytes=60,
        prime_bytes=100_000,
        feature_sentences=24,
        svae_train={"steps": 20, "eval_every": 10, "batch_size": 16},
        svae_control=False,
    ),
    # The default: about 11 minutes on 2 CPU cores.
    "tiny": DemoScale(
        "tiny",
        atlas_target=500_000,
        bank_size=1024,
        contrast_seeds=3,
        contrast_windows=32,
        sample_bytes=240,
        prime_bytes=1_000_000,
        feature_sentences=256,
        svae_train={"steps": 300, "eval_every": 50},
    ),
    # The same story on a GPU machine: the small preset (d=384, L=4) and a small-scale sweep.
    "small": DemoScale(
        "small",
        atlas_target=2_000_000,
        bank_size=8192,
        contrast_seeds=3,
        contrast_windows=64,
        sample_bytes=400,
        prime_bytes=8_000_000,
        feature_sentences=2048,
    ),
    # The model card's budgets: several GPU hours.
    "full": DemoScale(
        "full",
        atlas_target=8_000_000,
        bank_size=65536,
        contrast_seeds=3,
        contrast_windows=64,
        sample_bytes=400,
        prime_bytes=8_000_000,
        feature_sentences=8192,
    ),
    "calib23m": DemoScale(
        "calib23m",
        atlas_target=8_000_000,
        bank_size=65536,
        contrast_seeds=3,
        contrast_windows=64,
        sample_bytes=400,
        prime_bytes=8_000_000,
        feature_sentences=8192,
    ),
}


def demo_scale(name: str) -> DemoScale:
    if name not in DEMO_SCALES:
        raise GeolipError(f"--scale {name!r}: expected one of {', '.join(DEMO_SCALES)}")
    return DEMO_SCALES[name]
