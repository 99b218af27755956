"""Final checkpoints as MLflow models: a ``pyfunc`` (``pipelines.pyfunc``) logged in the
training run as ``model`` (``runs:/RUN_ID/model``), optionally registered (``models:/NAME/V``).

The model's only artifact is the safetensors checkpoint and its code is a file of
``pipelines/model_code`` ("models from code"): nothing is pickled, and MLflow's requirement
inference (a subprocess that loads the model) is skipped by naming the requirements.
MLflow's ``Model.log`` reads the global tracking URI (``tracking.fluent_store``).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import GeolipError
from pipelines.run_context import versions
from pipelines.tracking import client, fluent_store

MODEL_NAME = "model"
"""The logged model's name in its run: ``runs:/RUN_ID/model``."""
CODE = Path(__file__).resolve().parent / "model_code"
FAMILIES = ("aleph", "svae")


@dataclass(frozen=True)
class LoggedModel:
    """What ``log_checkpoint_model`` logged: the model's id and URIs."""

    model_id: str
    model_uri: str
    """``models:/m-...`` (the logged model itself)."""
    run_uri: str
    """``runs:/RUN_ID/model``."""
    registered: str | None = None
    """``models:/NAME/VERSION`` when registered."""


def log_checkpoint_model(
    uri: str,
    run_id: str,
    checkpoint: Path,
    family: str,
    *,
    register: str | None = None,
    step: int = 0,
) -> LoggedModel:
    """Log the checkpoint directory ``checkpoint`` as run ``run_id``'s pyfunc ``model``;
    ``register``: also a new version of the registered model of that name."""
    import mlflow
    from mlflow.models import Model

    if family not in FAMILIES:
        raise GeolipError(f"model family {family!r} is not one of {', '.join(FAMILIES)}")
    with fluent_store(uri), _quiet():
        model = _create(uri, run_id, family)
        info = Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=model.model_id,
            step=step,
            python_model=str(CODE / f"{family}.py"),
            artifacts={"checkpoint": str(checkpoint)},
            signature=_signature(family),
            input_example=_example(family),
            pip_requirements=_requirements(),
            metadata={"geolip_family": family},
        )
    registered = _register(uri, register, info.model_id, run_id) if register else None
    return LoggedModel(
        info.model_id, f"models:/{info.model_id}", f"runs:/{run_id}/{MODEL_NAME}", registered
    )


def _register(uri: str, name: str, model_id: str, run_id: str) -> str:
    """A new version of registered model ``name`` (created on first use) -> its URI."""
    from mlflow.exceptions import MlflowException

    store = client(uri)
    try:
        store.get_registered_model(name)
    except MlflowException:
        try:
            store.create_registered_model(name)
        except MlflowException:  # created by another run a moment ago
            store.get_registered_model(name)
    # The source is the model's own location: MLflow would resolve ``models:/m-ID`` in its
    # global store, not in ``uri``.
    source = store.get_logged_model(model_id).artifact_location
    run = store.get_run(run_id)
    note = f"{run.info.run_name} (run {run_id}): {run.data.tags.get('mlflow.note.content', '')}"
    version = store.create_model_version(
        name, source, run_id=run_id, model_id=model_id, description=note.strip().rstrip(":")
    )
    return f"models:/{name}/{version.version}"


def _create(uri: str, run_id: str, family: str):
    """The logged model, in its run's experiment: ``Model.log`` alone would create it in the
    default experiment, its artifacts under the cwd's ``mlruns``."""
    store = client(uri)
    run = store.get_run(run_id)
    return store.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=MODEL_NAME,
        source_run_id=run_id,
        params=dict(run.data.params),
        tags={"geolip.family": family},
        model_type=f"geolip-{family}",
    )


def _signature(family: str):
    """AlephLM: a ``text`` column in, optional params (``task``, ``bytes``...). SVAE: arrays."""
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    if family == "svae":
        return None  # its input shape is the checkpoint's patch geometry, read at load
    params = ParamSchema(
        [
            ParamSpec("task", "string", "score"),
            ParamSpec("bytes", "long", 64),
            ParamSpec("temperature", "double", 0.8),
            ParamSpec("seed", "long", 0),
        ]
    )
    return ModelSignature(
        inputs=Schema([ColSpec("string", "text")]),
        outputs=Schema([ColSpec("double", "bits_per_byte")]),
        params=params,
    )


def _example(family: str):
    """What the model card and the UI show as a call (MLflow checks that it scores)."""
    if family == "svae":
        return None
    import pandas as pd

    return pd.DataFrame({"text": ["The quick brown fox jumps over the lazy dog."]})


def _requirements() -> list[str]:
    v = versions()
    reqs = [f"torch=={v['torch'].split('+')[0]}", f"mlflow=={v['mlflow']}", "safetensors"]
    return [*reqs, f"geolip=={v['geolip']}"]


@contextlib.contextmanager
def _quiet():
    """MLflow logs each registration step at INFO and warns that ``predict`` has no type hints
    (its signature is given instead): noise next to the command's output."""
    loggers = [logging.getLogger(n) for n in ("mlflow", "mlflow.models", "mlflow.pyfunc")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
