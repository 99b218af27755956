"""Named presets: ``tiny`` (tests, seconds on CPU), ``small`` (≈ the 6.75M survey model),
``calib23m`` (≈ the 23M streamed calibration model). Variants derive with
``dataclasses.replace`` (or ``geolip.config.replace_at`` for a nested field)."""

from __future__ import annotations

from geolip.aleph.config import AlephConfig, AlephRunConfig, HeadConfig, PmixHeadConfig, TrainConfig
from geolip.config import ConfigError, replace_at


def tiny() -> AlephRunConfig:
    """Seconds on a laptop CPU: d=64, L=2, H=2, T=32 trigrams, C=16 (several chunks per segment)."""
    head = HeadConfig(d_cand=32, bank_tile=1024, pmix=PmixHeadConfig(d_pointer=16))
    model = AlephConfig(d_model=64, n_layers=2, n_heads=2, seq_trigrams=32, chunk=16, head=head)
    train = TrainConfig(
        steps=200, batch_size=8, lr=2e-3, bank_size=512, eval_windows=8, log_every=20
    )
    return AlephRunConfig(model=model, train=train, preset="tiny")


def small() -> AlephRunConfig:
    """The exp_007/exp_010 survey backbone: d=384, L=4, H=6, T=256 (6,677,248 params, byte head)."""
    return AlephRunConfig(model=AlephConfig(), train=TrainConfig(), preset="small")


def calib23m() -> AlephRunConfig:
    """The 23M calibration tier: d=512, L=8, H=8, 16 streamed segments of 256 (~4096 trigrams),
    pmix head, 8k steps; 532,480 floats of recurrent state per row."""
    model = AlephConfig(d_model=512, n_layers=8, n_heads=8, n_segments=16, head=HeadConfig("pmix"))
    train = TrainConfig(steps=8000, bank_size=65536)
    return AlephRunConfig(model=model, train=train, preset="calib23m")


PRESETS = {"tiny": tiny, "small": small, "calib23m": calib23m}


def get_preset(name: str) -> AlephRunConfig:
    """A preset by name; unknown names raise a ConfigError listing the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    return PRESETS[name]()


def with_head(run: AlephRunConfig, kind: str) -> AlephRunConfig:
    """``run`` with the head ``kind`` (byte | kernel | pmix | apmix), its other fields kept."""
    return replace_at(run, "model.head.kind", kind)
