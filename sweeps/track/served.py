"""The MLflow model's code, logged "from code" (`sweeps.track.registry.log_predictor`): MLflow runs this
file to build the model when it loads or serves it, so nothing is pickled."""

from mlflow.models import set_model

from sweeps.track.registry import PricerModel

set_model(PricerModel())
