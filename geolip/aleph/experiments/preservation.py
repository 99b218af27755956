"""The preservation arms of spec §11.1 as config transforms.

A *preservation arm* is a treatment of the codebook during training, chosen to test whether the
geometry it learns matters: ``free`` trains it plainly; ``div_λ`` adds λ·L_div (usage diversity);
``frozen`` keeps its init as a buffer; ``slowlane`` trains it in its own Adam group at lr × 0.1
(``slowlane_0.01``: × 0.01); ``spread`` freezes a maximal-spread line packing; ``frozen_random``
freezes ``rownorm(randn)`` from a fixed seed (the control for ``spread``). The model and optimiser
read ``model.codebook`` (``geolip.aleph.codebook.build_codebook``,

``geolip.aleph.train.optim.build_optimizer``), so an arm is nothing but a config.
"""

from __future__ import annotations

import dataclasses

from geolip.aleph.config import AlephConfig
from geolip.config import ConfigError

ARMS: dict[str, dict] = {
    "free": {"preservation": "free"},
    "div_0.003": {"preservation": "div", "div_weight": 0.003},
    "div_0.01": {"preservation": "div", "div_weight": 0.01},
    "div_0.03": {"preservation": "div", "div_weight": 0.03},
    "frozen": {"preservation": "frozen"},
    "slowlane": {"preservation": "slowlane", "slowlane_mult": 0.1},
    "slowlane_0.01": {"preservation": "slowlane", "slowlane_mult": 0.01},
    "spread": {"preservation": "spread"},
    "frozen_random": {"preservation": "frozen_random"},
}
"""Arm name -> the ``CodebookConfig`` fields it sets (the rest is kept from the base config)."""


def arm_config(model_cfg: AlephConfig, arm: str) -> AlephConfig:
    """``model_cfg`` with the codebook treatment of ``arm`` (``frozen-random`` is accepted too)."""
    name = arm.replace("-", "_")
    if name not in ARMS:
        raise ConfigError(f"unknown preservation arm {arm!r}; valid arms: {list(ARMS)}")
    codebook = dataclasses.replace(model_cfg.codebook, **ARMS[name])
    return dataclasses.replace(model_cfg, codebook=codebook)
