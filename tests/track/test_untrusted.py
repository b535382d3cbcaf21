"""Folders and names from elsewhere: an ensemble member path can't leave its folder, a baseline
file can't run code when loaded, a registry name can't change a search, and the served model
answers an empty or unreadable text with a problem, not a price. No fine-tune: the predictor is
an ensemble of one real fitted baseline."""

from __future__ import annotations

import gzip
import json
import logging
import pickle
import warnings
from pathlib import Path

import pytest

from pricer.errors import SpecError
from pricer.predict.baselinefile import SUFFIX, load_baseline, save_baseline
from pricer.predict.predictor import load_predictor


def test_every_fitted_baseline_round_trips_through_the_allowlisted_file(tmp_path: Path, fitted) -> None:
    baselines, items = fitted
    for name, baseline in baselines.items():
        path = save_baseline(baseline, tmp_path / f"{name}{SUFFIX}")
        # approx: the forest sums its trees in parallel threads, in no fixed order
        assert load_baseline(path).predict(items).tolist() == pytest.approx(baseline.predict(items).tolist(),
                                                                              rel=1e-12), name


def test_a_baseline_file_that_names_anything_else_is_refused_before_it_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    path = tmp_path / f"model{SUFFIX}"
    with gzip.open(path, "wb") as handle:
        pickle.dump(Payload(), handle)
    with pytest.raises(SpecError, match=r"refused to load: it names (posix|os)\.system"):
        load_baseline(path)
    assert not marker.exists()


def test_an_old_joblib_baseline_is_refused_with_a_line_saying_to_re_export(tmp_path: Path, fitted) -> None:
    import joblib

    old = tmp_path / "model.joblib"
    joblib.dump(fitted[0]["constant"], old)
    with pytest.raises(SpecError, match="joblib pickle, which pricer no longer loads.*re-export"):
        load_baseline(old)


@pytest.mark.parametrize("path", ["../outside/model.pkl.gz", "/etc/passwd", "members/../../x"])
def test_an_ensemble_member_path_that_leaves_the_folder_is_refused(ensemble_folder: Path, path: str) -> None:
    meta = json.loads((ensemble_folder / "pricer.json").read_text())
    meta["members"][0]["path"] = path
    (ensemble_folder / "pricer.json").write_text(json.dumps(meta))
    with pytest.raises(SpecError, match=r"pricer.json: member linear: path .* leaves the folder"):
        load_predictor(ensemble_folder)


def test_a_member_linked_out_of_the_folder_is_refused(ensemble_folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    (ensemble_folder / "members" / "linear").rename(outside)
    (ensemble_folder / "members" / "linear").symlink_to(outside)
    with pytest.raises(SpecError, match="leaves the folder"):
        load_predictor(ensemble_folder)


@pytest.mark.parametrize("name", ["x' or name != 'y", "a/b", "m:1", "", " lead", "q\"uote"])
def test_a_register_name_that_is_not_a_plain_model_name_is_refused_in_one_line(name: str, capsys) -> None:
    from sweeps.cli.main import main

    assert main(["export", "no-such-study", "--out", "/nonexistent/out", "--register", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--register" in err[0] and "a model name is" in err[0]


def test_served_model_gives_a_problem_not_a_price_for_empty_or_unreadable_texts(ensemble_folder: Path) -> None:
    import pandas as pd
    from mlflow.pyfunc import PythonModelContext

    from sweeps.track.registry import ARTIFACT, PricerModel

    model = PricerModel()
    model.load_context(PythonModelContext(artifacts={ARTIFACT: str(ensemble_folder)}, model_config={}))
    texts = ["", "   ", None, 3.5, "Stainless steel kettle\n1.7 litre, 1500 W, weight 2 pounds"]
    out = model.predict(None, pd.DataFrame({"text": texts}))
    assert out["price"].isna().tolist() == [True, True, True, True, False]
    assert out["problem"].tolist()[:4] == ["empty text", "empty text", "empty text",
                                           "unreadable text (a float, not a string)"]
    assert out["problem"].iloc[4] == "" and out["price"].iloc[4] >= 0


def test_registering_logs_a_signature_and_an_input_example_without_warnings(ensemble_folder: Path, tmp_path: Path,
                                                                             capfd, caplog) -> None:
    import mlflow
    import pandas as pd

    from sweeps.track.registry import log_predictor
    from sweeps.track.tracking import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "registry")
    run_id = tracker.start_run("owner")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_uri, version = log_predictor(uri, run_id, ensemble_folder, register="shop-pricer")
    captured = capfd.readouterr()
    printed = (captured.out + captured.err).lower()
    assert "warning" not in printed and "cloudpickle" not in printed, printed[-2000:]
    # what a user sees: MLflow's own warnings (its no-type-hints, CloudPickle and no-input-example
    # ones are UserWarnings or log records); library deprecations are not about this model
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not shown, [f"{w.filename}: {w.message}" for w in shown]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    mlflow.set_tracking_uri(uri)
    try:
        info = mlflow.models.get_model_info(model_uri)
        assert [c.name for c in info.signature.inputs] == ["text"]
        assert [c.name for c in info.signature.outputs] == ["price", "price_low", "price_high", "problem"]
        assert info.saved_input_example_info is not None and str(version) == "1"
        served = mlflow.pyfunc.load_model(f"models:/shop-pricer/{version}")
    finally:
        mlflow.set_tracking_uri(None)
    out = served.predict(pd.DataFrame({"text": ["", "Cordless drill 20V\nTwo batteries, charger"]}))
    assert out["price"].isna().tolist() == [True, False] and out["problem"].iloc[0] == "empty text"
