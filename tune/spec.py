"""What a sweep is made of: trials (one training or evaluation run each), phases and scales.

A program (``tune.programs``) turns a sweep scale, a seed count and the user's ``--set`` changes
into phases; a phase is one Ray Tune run over its trials, and a later phase may name trials of an
earlier one (a graft's donor, the checkpoints a contrast ablates). A train trial carries its whole
run config as the typed object the program built; ``to_dict`` / ``from_dict`` are for the sweep's
plan file (``--resume``, ``--from``) and MLflow.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from geolip.aleph.config import AlephRunConfig
from geolip.aleph.presets import get_preset
from geolip.svae.config import SVAERunConfig
from pipelines.errors import GeolipError
from pipelines.scales import SCALES, Scale


class SweepError(GeolipError):
    """A sweep that cannot start: unknown program or arm, a missing donor, too small a cluster."""


def read_json_object(path: str | Path) -> dict:
    """The JSON object in ``path`` (a sweep plan, a demo's state); anything else is one
    ``GeolipError`` line naming the file and what it holds."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GeolipError(f"cannot read {path}: {exc.strerror or exc}") from None
    return json_object(data, str(path))


def json_object(data: bytes, where: str) -> dict:
    """The JSON object in ``data`` (read from ``where``, a path or a URI)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise GeolipError(f"{where} is not UTF-8 text; expected a JSON object") from None
    except json.JSONDecodeError as exc:
        raise GeolipError(
            f"{where} is not readable JSON ({exc.msg} at line {exc.lineno})"
        ) from None
    if not isinstance(value, dict):
        raise GeolipError(f"{where} holds a JSON {json_kind(value)}; expected a JSON object")
    return value


def json_kind(value) -> str:
    """JSON's name for the type of a decoded ``value`` (array, string, number, ...)."""
    kinds = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class SVAEBudget:
    """The ``svae`` program at one scale: each fit's steps and batch, the lens rungs
    (``model.D_lens``; the default ``n_heads=4`` must divide each) and the seeds per rung (the
    §14 rule reads g's spread over 3)."""

    steps: int
    batch_size: int
    rungs: tuple[int, ...]
    seeds: int = 3

    def base(self, run: SVAERunConfig) -> SVAERunConfig:
        """``run`` (the data's config, ``pipelines.svae.data.run_config``) at this budget."""
        train = dataclasses.replace(
            run.train,
            steps=self.steps,
            batch_size=self.batch_size,
            eval_every=max(1, self.steps // 10),
        )
        return dataclasses.replace(run, train=train)


SVAE_WIDE = (4, 8, 16, 32, 64)
# The seed's image run (run_image(D_lens=16, epochs=8)): 8 epochs of 1000 steps at batch 512.
SVAE_GPU = SVAEBudget(steps=8000, batch_size=512, rungs=SVAE_WIDE)


@dataclass(frozen=True)
class SweepScale:
    """What the programs need at one ``--scale`` (``pipelines.scales`` names the preset).

    A sweep runs many trials, so its trials have their own budget: ``steps`` for a cold run,
    ``graft_steps`` for a warm start (and the donor continued for as long). ``banks`` are the
    sizes of the ``dense`` and ``sparse`` banks; ``svae`` is the ``svae`` program's budget.
    """

    name: str
    steps: int
    graft_steps: int
    log_every: int
    eval_windows: int
    eval_bytes: int
    seeds: int
    banks: dict[str, int]
    ladder: tuple[int, ...]
    context: tuple[int, ...]
    search_samples: int
    search_chunks: tuple[int, ...]
    svae: SVAEBudget

    @property
    def scale(self) -> Scale:
        return SCALES[self.name]

    @property
    def preset(self) -> str:
        return self.scale.preset

    def base(self) -> AlephRunConfig:
        """A cold trial's run config: the scale's preset with the trials' budget."""
        run = get_preset(self.preset)
        train = dataclasses.replace(
            run.train, steps=self.steps, log_every=self.log_every, eval_windows=self.eval_windows
        )
        return dataclasses.replace(run, train=train)


GPU_BANKS = {"dense": 65536, "sparse": 8192}
GPU_LADDER = (4, 8, 16, 32, 64, 128, 256, 512, 1024)
SWEEP_SCALES: dict[str, SweepScale] = {
    # Every program end to end in seconds per trial (the tests' and the smoke demo's).
    "smoke": SweepScale(
        "smoke",
        steps=6,
        graft_steps=3,
        log_every=3,
        eval_windows=8,
        eval_bytes=20_000,
        seeds=1,
        banks={"dense": 1024, "sparse": 256},
        ladder=(4, 8),
        context=(16, 32),
        search_samples=2,
        search_chunks=(8, 16),
        svae=SVAEBudget(steps=4, batch_size=16, rungs=(4, 8), seeds=1),
    ),
    # Minutes on 2 CPU cores: the tiny preset, short runs, small banks.
    "tiny": SweepScale(
        "tiny",
        steps=60,
        graft_steps=30,
        log_every=10,
        eval_windows=8,
        # python-docs' whole held-out split (105 kB): 33k targets, 256 windows of ~390 bytes
        # for the paired SE (tune.ranking); ~2 s of each trial's final evaluation.
        eval_bytes=100_000,
        seeds=2,
        banks={"dense": 1024, "sparse": 256},
        ladder=(4, 8, 16),
        context=(16, 32, 64),
        search_samples=4,
        search_chunks=(8, 16, 32),
        svae=SVAEBudget(steps=600, batch_size=64, rungs=(4, 16, 64)),
    ),
    # The survey's 6.75M arms (exp_010): the small preset, 5k cold / 2k warm-start steps.
    "small": SweepScale(
        "small",
        steps=5000,
        graft_steps=2000,
        log_every=50,
        eval_windows=16,
        eval_bytes=1_000_000,
        seeds=2,
        banks=GPU_BANKS,
        ladder=GPU_LADDER,
        context=(128, 256, 512),
        search_samples=16,
        search_chunks=(64, 128, 256),
        svae=SVAEBudget(steps=4000, batch_size=256, rungs=SVAE_WIDE),
    ),
    # The model card's budgets (exp_007: 10k steps; grafts 2k from 5k donors), on GPUs.
    "full": SweepScale(
        "full",
        steps=10_000,
        graft_steps=2000,
        log_every=50,
        eval_windows=16,
        eval_bytes=4_000_000,
        seeds=2,
        banks=GPU_BANKS,
        ladder=GPU_LADDER,
        context=(128, 256, 512, 1024),
        search_samples=32,
        search_chunks=(64, 128, 256),
        svae=SVAE_GPU,
    ),
    # The 23M calibration model's arms at its 8k-step budget.
    "calib23m": SweepScale(
        "calib23m",
        steps=8000,
        graft_steps=2000,
        log_every=50,
        eval_windows=16,
        eval_bytes=4_000_000,
        seeds=2,
        banks=GPU_BANKS,
        ladder=(4, 8, 16, 32, 64),
        context=(128, 256),
        search_samples=16,
        search_chunks=(64, 128, 256),
        svae=SVAE_GPU,
    ),
}


def sweep_scale(name: str) -> SweepScale:
    if name not in SWEEP_SCALES:
        raise SweepError(f"unknown --scale {name!r}; scales: {', '.join(SWEEP_SCALES)}")
    return SWEEP_SCALES[name]


SWAP_LABELS = ("mix", "corpus")
"""The survey's swap banks (``tune.banks``): another stratum mix, another corpus."""


@dataclass(frozen=True)
class TrialSpec:
    """One trial. ``arm`` groups trials over seeds in the summary; ``key`` is unique in a sweep.

    ``kind``: ``train`` (a training run of ``run``), ``svae`` (an SVAE companion run of
    ``svae`` with its patch-shuffled control), ``contrast`` (controller contrast of the
    checkpoint of trial ``source``) or ``bank_swap`` (the checkpoint of ``source`` scored on
    another bank, no retraining). ``donor`` names a trial of an earlier phase (or a checkpoint
    directory) to warm-start from with ``graft``.
    """

    key: str
    arm: str
    kind: str = "train"
    run: AlephRunConfig | None = None
    """The whole run config of a ``train`` trial (None for evaluations)."""
    svae: SVAERunConfig | None = None
    """The whole run config of an ``svae`` trial."""
    seed: int = 0
    bank: str = "none"
    """Bank label: none | dense | sparse (its size is in ``run.train.bank_size``); a
    ``bank_swap``'s: one of ``SWAP_LABELS`` (``tune.banks``)."""
    donor: str | None = None
    graft: str = "none"
    source: str | None = None
    tags: dict = field(default_factory=dict)

    @property
    def head(self) -> str:
        """The trial's head kind (an evaluation's is its source's, recorded in its tags)."""
        return self.run.head if self.run is not None else self.tags.get("head", "")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["run"] = self.run.to_dict() if self.run is not None else None
        d["svae"] = self.svae.to_dict() if self.svae is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrialSpec:
        """The trial of ``to_dict``. A plan written by an older geolip (``head`` and
        ``overrides`` instead of ``run``) gives its trials without a run: enough for a contrast
        of their checkpoints (``--from``), which reads only keys, arms and tags."""
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["run"] = AlephRunConfig.from_dict(d["run"]) if d.get("run") else None
        d["svae"] = SVAERunConfig.from_dict(d["svae"]) if d.get("svae") else None
        return cls(**d)


@dataclass(frozen=True)
class Phase:
    """Trials run together as one Ray Tune run; ``search`` makes it an ASHA search instead."""

    name: str
    trials: tuple[TrialSpec, ...]
    search: dict | None = None
