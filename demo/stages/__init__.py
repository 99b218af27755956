"""The demo's stages, in order: ``STAGES[name] = (title, function)``.

Every stage takes the demo's context (``demo.run.Demo``) and returns a JSON-able record: its key
figures, a one-line ``summary`` (printed again when a re-run skips the stage), the MLflow ``runs``
it made and the ``paths`` that ``--fresh`` removes.
"""

from __future__ import annotations

from functools import partial

from demo.stages.aleph import stage_atlas, stage_bank, stage_eval, stage_sample, stage_train
from demo.stages.companion import stage_features, stage_summary, stage_svae, stage_sweep

STAGES = {
    "atlas": ("atlas of the corpus (Ray Data -> Parquet, DuckDB)", stage_atlas),
    "bank": ("trigram bank cut from the atlas", stage_bank),
    "train-kernel": ("AlephLM, kernel head (Ray Train)", partial(stage_train, head="kernel")),
    "train-pmix": ("AlephLM, pmix head (Ray Train)", partial(stage_train, head="pmix")),
    "eval": ("held-out bits/byte, compressors, controller contrast", stage_eval),
    "sample": ("sample from the better head", stage_sample),
    "features": ("MiniLM feature shards (Ray Data)", stage_features),
    "svae-features": (
        "SVAE companion on the features (Ray Train)",
        partial(stage_svae, stage="svae-features"),
    ),
    "svae-images": (
        "SVAE companion on structured images (Ray Train)",
        partial(stage_svae, stage="svae-images"),
    ),
    "sweep": ("preservation battery (Ray Tune)", stage_sweep),
    "summary": ("summary run", stage_summary),
}
