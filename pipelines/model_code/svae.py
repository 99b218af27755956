"""The code of a logged SVAE companion model (MLflow "models from code": nothing is pickled)."""

import mlflow.models

from pipelines.pyfunc import SVAEModel

mlflow.models.set_model(SVAEModel())
