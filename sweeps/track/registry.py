"""The MLflow model: a predictor folder (adapter, merged, or any kind `pricer.predict.predictor` loads) as a
pyfunc that takes a DataFrame of product texts and returns their prices; logged on a study's run
and registered in the MLflow Model Registry, so ``models:/NAME/VERSION`` loads and serves it.

The folder travels as the model's artifact; the code does not: wherever the model is loaded or
served (``mlflow models serve --env-manager local``), this project must be installed.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from pricer.errors import SpecError
from sweeps.track.redact import redact
from sweeps.track.tracking import PARENT_ENDS

ARTIFACT = "predictor"
MODEL_NAME = "pricer"
TEXT, PRICE, PROBLEM = "text", "price", "problem"
LOW, HIGH = "price_low", "price_high"
MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,255}")
# logged "from code": MLflow records this file, not a pickle of the class (no CloudPickle warning)
MODEL_CODE = Path(__file__).with_name("served.py")
EXAMPLE = "Stainless steel electric kettle\n1.7 litre, auto shut-off, boil-dry protection, 1500 W"
# the runtime the model needs; given explicitly because MLflow would otherwise load the model in a
# subprocess to infer it (a minute of 4-bit loading) and still miss this project itself
REQUIREMENTS = ["mlflow", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "pandas"]


class PricerModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a ``text`` column (the title, then a newline and the description),
    cleaned as training texts were. Output: a DataFrame with ``price`` (NaN where there is none),
    the range around it, ``price_low`` and ``price_high`` (NaN when the folder gives no range: an
    ensemble, or a folder that reads greedily), and ``problem`` (why no price: an empty or
    unreadable text, or a model that wrote no price; empty when priced). An empty text is never
    sent to the model: it would price it anyway ($40)."""

    def load_context(self, context) -> None:
        from pricer.predict.predictor import load_predictor

        self.predictor = load_predictor(context.artifacts[ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from pricer.predict.pricing import price_free_texts

        answers = price_free_texts(self.predictor, list(model_input[TEXT]))
        nan = float("nan")
        prices = [nan if a.price is None else a.price for a in answers]
        lows = [nan if a.range is None else a.range.low for a in answers]
        highs = [nan if a.range is None else a.range.high for a in answers]
        problems = [a.problem for a in answers]
        return pd.DataFrame({PRICE: prices, LOW: lows, HIGH: highs, PROBLEM: problems})


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", TEXT)]),
                          outputs=Schema([ColSpec("double", PRICE), ColSpec("double", LOW), ColSpec("double", HIGH),
                                           ColSpec("string", PROBLEM)]))


def check_model_name(name: str) -> str:
    """`name` if it can name a registered model and go into a registry search as a quoted literal.

    Raises:
        SpecError: anything beyond letters, digits, spaces and ``._-`` (MLflow itself refuses ``/``
            and ``:``; a quote would change the search's meaning).
    """
    if not MODEL_NAME_RE.fullmatch(name or ""):
        raise SpecError(f"--register {name!r}: a model name is 1-256 letters, digits, spaces, '.', '_' or '-', "
                        "starting with a letter or digit")
    return name


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

    if register is not None:
        check_model_name(register)
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    tags = {k: redact(v) for k, v in (tags or {}).items()}
    # the fluent API is the only door to log_model, and the registry looks a logged model up through
    # the global tracking URI: pin both to this store and this run, whatever MLFLOW_TRACKING_URI or
    # MLFLOW_RUN_ID say
    run = MlflowClient(tracking_uri).get_run(run_id)
    found = run.info
    # the model's metrics go to the run too (MLflow logs them at step 0): a trial's own metrics are
    # there already, and logged again they would add a step-0 point to its validation curve
    new_metrics = {k: v for k, v in metrics.items() if k not in run.data.metrics}
    ends = len(MlflowClient(tracking_uri).get_metric_history(run_id, PARENT_ENDS))
    with _use_tracking_uri(tracking_uri):
        with _as_found(tracking_uri, run_id, found, ends), mlflow.start_run(run_id=run_id):
            # the input example is priced once here (MLflow checks that serving works): one load
            info = mlflow.pyfunc.log_model(name=MODEL_NAME, python_model=str(MODEL_CODE),
                                           artifacts={ARTIFACT: str(folder)}, signature=signature(),
                                           input_example=pd.DataFrame({TEXT: [EXAMPLE]}),
                                           pip_requirements=REQUIREMENTS, tags=tags)
            if new_metrics:
                mlflow.log_metrics(new_metrics, model_id=info.model_id)
        if register is None:
            return info.model_uri, None
        client = MlflowClient(tracking_uri)
        if not client.search_registered_models(filter_string=f"name = '{register}'"):
            client.create_registered_model(register, description="Product price predictors from pricer-sweeps")
        version = client.create_model_version(register, info.model_uri, run_id=run_id, model_id=info.model_id,
                                              tags={**tags, **{k: f"{v:.6g}" for k, v in metrics.items()}},
                                              description=description)
    return info.model_uri, version.version


@contextlib.contextmanager
def _as_found(tracking_uri: str, run_id: str, found, ends: int) -> Iterator[None]:
    """Leave the run in the state it was found in: the fluent run that log_model needs marks it
    FINISHED on exit, and a study's parent run still RUNNING belongs to its workers (the last one
    out ends it, counting ``parent_run_ends``; one that ended it meanwhile is left ended)."""
    from mlflow import MlflowClient

    try:
        yield
    finally:
        client = MlflowClient(tracking_uri)
        if found.status == "RUNNING":
            if len(client.get_metric_history(run_id, PARENT_ENDS)) == ends:
                client.update_run(run_id, status="RUNNING")
        else:
            client.set_terminated(run_id, found.status, end_time=found.end_time)
