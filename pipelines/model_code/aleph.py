"""The code of a logged AlephLM model (MLflow "models from code": nothing is pickled)."""

import mlflow.models

from pipelines.pyfunc import AlephModel

mlflow.models.set_model(AlephModel())
