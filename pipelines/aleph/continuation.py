"""``--init-from DONOR --graft continue``: the donor's own training, continued.

A warm start (``--graft none``) takes the donor's weights and starts a fresh Adam and the cosine
schedule at its warm-up: a *warm restart*. A continuation is the donor's run going on: its
weights, its Adam moments and step count, its data stream (batches are drawn by seed and step)
and its learning-rate schedule, which ended at the donor's ``train.steps`` and so stays at its
floor (``lr_final_frac`` of the peak) for the extra steps. Only the continued run's step budget
(``train.steps`` extra steps), ``log_every`` and ``eval_windows`` come from the run config; every
other training setting is the donor's, because its optimizer state was made with them.

Every final checkpoint keeps its optimizer state (``train_state.pt``, torch tensors loaded with
``weights_only=True``) for this; checkpoints written before it did cannot be continued.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from geolip.aleph.checkpoint import load_checkpoint
from geolip.aleph.config import AlephRunConfig
from geolip.aleph.model import AlephLM
from geolip.config import config_diff
from pipelines.errors import GeolipError
from pipelines.run_storage import TRAIN_STATE
from pipelines.storage import readable

GRAFT = "continue"
"""The ``--graft`` value of a continuation."""


@dataclass(frozen=True)
class Continuation:
    """What a continued run starts from."""

    state: Path
    """The donor's ``train_state.pt`` (optimizer, scheduler, step)."""
    step: int
    """The donor's last step: the continued run's first is ``step + 1``."""
    schedule_steps: int
    """The donor's schedule horizon (its ``train.steps``), which the continuation keeps."""
    run: AlephRunConfig
    """The continued run's config: the donor's, with ``steps = step + extra``."""
    donor: AlephLM
    """The donor's model (its weights are the run's start)."""


def continuation_of(init_from: str, run: AlephRunConfig) -> Continuation:
    """The continuation of the donor checkpoint ``init_from`` by ``run.train.steps`` steps;
    refused with one line naming ``--init-from`` when it cannot be continued."""
    path = Path(readable(init_from, "--init-from")).expanduser().resolve()
    try:
        donor, donor_run, meta = load_checkpoint(path)
    except ValueError as exc:  # CheckpointError
        raise GeolipError(f"--init-from: {exc}") from exc
    state = path / TRAIN_STATE
    if not state.is_file():
        raise GeolipError(
            f"--init-from {init_from}: --graft continue needs the donor's optimizer state "
            f"({TRAIN_STATE}), which this checkpoint does not hold (written by an older geolip, "
            "or not a run's final checkpoint); use --graft none for a warm restart"
        )
    if donor.cfg != run.model:
        raise GeolipError(
            f"--init-from {init_from}: --graft continue continues the donor's own model; this "
            f"run's differs in {config_diff(donor.cfg, run.model)} (donor, this run)"
        )
    step = int(meta.get("step", donor_run.train.steps))
    train = dataclasses.replace(
        donor_run.train,
        steps=step + run.train.steps,
        log_every=run.train.log_every,
        eval_windows=run.train.eval_windows,
    )
    continued = dataclasses.replace(donor_run, train=train)
    return Continuation(state, step, donor_run.train.steps, continued, donor)
