"""The plain training step and single-process loop (spec §3.5, §7.3); Ray Train workers call
:func:`train_step` too."""

from geolip.aleph.train.loop import TrainResult, train
from geolip.aleph.train.optim import build_optimizer, build_scheduler
from geolip.aleph.train.step import NonFiniteLossError, train_step

__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "build_optimizer",
    "build_scheduler",
    "train",
    "train_step",
]
