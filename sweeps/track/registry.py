"""The MLflow model: a predictor folder (adapter, merged, or any kind `pricer.predict.predictor` loads) as a
pyfunc that takes a DataFrame of product texts and returns their prices; logged on a study's run
and registered in the MLflow Model Registry, so ``models:/NAME/VERSION`` loads and serves it.

The folder travels as the model's artifact; the code does not: wherever the model is loaded or
served (``mlflow models serve --env-manager local``), this project must be installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import mlflow.pyfunc

from sweeps.track.redact import redact

ARTIFACT = "predictor"
MODEL_NAME = "pricer"
TEXT, PRICE = "text", "price"
LOW, HIGH = "price_low", "price_high"
# the runtime the model needs; given explicitly because MLflow would otherwise load the model in a
# subprocess to infer it (a minute of 4-bit loading) and still miss this project itself
REQUIREMENTS = ["mlflow", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "pandas"]


class PricerModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a ``text`` column (the title, then a newline and the description),
    cleaned as training texts were. Output: a DataFrame with ``price`` (NaN where the model wrote
    no number) and the range around it, ``price_low`` and ``price_high`` (NaN when the folder gives
    no range: an ensemble, or a folder that reads greedily)."""

    def load_context(self, context) -> None:
        from pricer.predict.predictor import load_predictor

        self.predictor = load_predictor(context.artifacts[ARTIFACT])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from pricer.data.curate import clean_text
        from pricer.predict.pricing import price_texts

        texts = [clean_text(str(t)) for t in model_input[TEXT]]
        prices, ranges = price_texts(self.predictor, texts)
        ranges = ranges or [None] * len(prices)
        nan = float("nan")
        return pd.DataFrame({PRICE: [nan if p is None else p for p in prices],
                             LOW: [nan if r is None else r.low for r in ranges],
                             HIGH: [nan if r is None else r.high for r in ranges]})


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", TEXT)]),
                          outputs=Schema([ColSpec("double", PRICE), ColSpec("double", LOW), ColSpec("double", HIGH)]))


def log_predictor(tracking_uri: str, run_id: str, folder: Path, *, register: str | None = None,
                  metrics: Mapping[str, float] | None = None, tags: Mapping[str, str] | None = None,
                  description: str = "") -> tuple[str, str | None]:
    """Log `folder` as an MLflow model on `run_id`, and register it as a new version of `register`.

    Args:
        metrics: linked to the logged model and set as tags on the registered version, so the
            registry shows how good this version is.
        tags: on the logged model and the version (study, trial, base model).

    Returns:
        (the model's URI, the registered version or None).
    """
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    tags = {k: redact(v) for k, v in (tags or {}).items()}
    # the fluent API is the only door to log_model, and the registry looks a logged model up through
    # the global tracking URI: pin both to this store and this run, whatever MLFLOW_TRACKING_URI or
    # MLFLOW_RUN_ID say
    with _use_tracking_uri(tracking_uri):
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=PricerModel(),
                                           artifacts={ARTIFACT: str(folder)}, signature=signature(),
                                           pip_requirements=REQUIREMENTS, tags=tags)
            if metrics:
                mlflow.log_metrics(metrics, model_id=info.model_id)
        if register is None:
            return info.model_uri, None
        client = MlflowClient(tracking_uri)
        if not client.search_registered_models(filter_string=f"name = '{register}'"):
            client.create_registered_model(register, description="Product price predictors from pricer-sweeps")
        version = client.create_model_version(register, info.model_uri, run_id=run_id, model_id=info.model_id,
                                              tags={**tags, **{k: f"{v:.6g}" for k, v in metrics.items()}},
                                              description=description)
    return info.model_uri, version.version
