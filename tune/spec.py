"""What a sweep is made of: trials (one training or evaluation run each), phases and scales.

A program (``tune.programs``) turns a scale, a seed count and the user's ``--set`` overrides into
phases; a phase is one Ray Tune run over its trials, and a later phase may name trials of an
earlier one (a graft's donor, the checkpoints a contrast ablates). Everything here is plain data
(JSON-able), because trials travel to Tune's trial processes and are recorded in MLflow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from pipelines.errors import GeolipError


class SweepError(GeolipError):
    """A sweep that cannot start: unknown program or arm, a missing donor, too small a cluster."""


@dataclass(frozen=True)
class Scale:
    """Presets and budgets of one ``--scale``.

    ``steps`` is the budget of a cold run; ``graft_steps`` that of a warm start (and of the donor
    continued for the same steps); banks are the sizes of the ``dense`` and ``sparse`` banks.
    """

    name: str
    preset: str
    steps: int
    graft_steps: int
    seeds: int
    banks: dict[str, int]
    ladder: tuple[int, ...]
    context: tuple[int, ...]
    search_samples: int
    eval_bytes: int
    overrides: tuple[str, ...] = ()


SCALES: dict[str, Scale] = {
    # Minutes on 2 CPU cores: the tiny preset, short runs, small banks.
    "tiny": Scale(
        "tiny", "tiny", steps=60, graft_steps=30, seeds=2, banks={"dense": 1024, "sparse": 256},
        ladder=(4, 8, 16), context=(16, 32, 64), search_samples=4, eval_bytes=20_000,
        overrides=("train.log_every=10", "train.eval_windows=8"),
    ),
    # The survey's 6.75M arms (exp_010): the small preset, 5k cold / 2k warm-start steps.
    "small": Scale(
        "small", "small", steps=5000, graft_steps=2000, seeds=2,
        banks={"dense": 65536, "sparse": 8192}, ladder=(4, 8, 16, 32, 64, 128, 256, 512, 1024),
        context=(128, 256, 512), search_samples=16, eval_bytes=1_000_000,
    ),
    # The model card's budgets (exp_007: 10k steps; grafts 2k from 5k donors), on GPUs.
    "full": Scale(
        "full", "small", steps=10000, graft_steps=2000, seeds=2,
        banks={"dense": 65536, "sparse": 8192}, ladder=(4, 8, 16, 32, 64, 128, 256, 512, 1024),
        context=(128, 256, 512, 1024), search_samples=32, eval_bytes=4_000_000,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class TrialSpec:
    """One trial. ``arm`` groups trials over seeds in the summary; ``key`` is unique in a sweep.

    ``kind``: ``train`` (a ``geolip train aleph`` run), ``contrast`` (controller contrast of the
    checkpoint of trial ``source``) or ``bank_swap`` (the checkpoint of ``source`` scored on
    another bank, no retraining). ``donor`` names a trial of an earlier phase (or a checkpoint
    directory) to warm-start from with ``graft``.
    """

    key: str
    arm: str
    kind: str = "train"
    head: str = "pmix"
    seed: int = 0
    overrides: tuple[str, ...] = ()
    bank: str = "none"
    donor: str | None = None
    graft: str = "none"
    source: str | None = None
    tags: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrialSpec:
        d = dict(d)
        d["overrides"] = tuple(d.get("overrides", ()))
        return cls(**d)


@dataclass(frozen=True)
class Phase:
    """Trials run together as one Ray Tune run; ``search`` makes it an ASHA search instead."""

    name: str
    trials: tuple[TrialSpec, ...]
    search: dict | None = None


def with_seed(overrides: tuple[str, ...], seed: int) -> tuple[str, ...]:
    return (*overrides, f"train.seed={seed}")
