"""A password in a storage or tracking URL stays out of MLflow params, tags, logged study files,
model cards and error lines. Real PostgreSQL (trust auth accepts any password), real MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweeps.cli.main import main
from sweeps.track.redact import redact

SECRET = "s3cret-Pa55"

STUDY = """\
name: redact-test
workdir: {workdir}
storage: {storage}
data: {{source: {sample}, limit: 200}}
search_space:
  model: {{choices: [smollm2-135m-instruct]}}
fixed: {{max_steps: 1, batch_size: 2, max_tokens: 64, eval_items: 4, test_items: 4}}
timeout: 1
"""


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{SECRET}@{host}"


@pytest.mark.parametrize(("text", "expected"), [
    ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
    ("postgresql+psycopg://u:p%40ss@h:5432/d?sslmode=require", "postgresql+psycopg://u:***@h:5432/d?sslmode=require"),
    ("storage mysql://root:a@b@h/db: can't connect", "storage mysql://root:***@h/db: can't connect"),
    ("postgresql://h/db?user=u&password=zz&x=1", "postgresql://h/db?user=u&password=***&x=1"),
    ("sqlite:////tmp/runs/mlflow.db", "sqlite:////tmp/runs/mlflow.db"),
    ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
])
def test_redact_masks_only_the_password(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("flag", ["--storage", "--tracking-uri"])
def test_a_password_never_reaches_the_error_line(flag: str, tmp_path: Path, sample_path: Path, capsys) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(workdir=tmp_path / "runs", storage="sqlite:///" + str(tmp_path / "o.db"),
                                 sample=sample_path))
    # nothing listens on port 1: the preflight fails at once and quotes the URL
    assert main(["launch", str(path), flag, f"postgresql://pricer:{SECRET}@127.0.0.1:1/nodb"]) == 2
    err = capsys.readouterr().err
    assert "pricer:***@127.0.0.1:1/nodb" in err and SECRET not in err


def test_a_password_never_reaches_mlflow_or_the_logged_study_file(tmp_path: Path, sample_path: Path,
                                                                 pg_url: str) -> None:
    from sweeps.run.launch import launch
    from sweeps.spec.study import load_study
    from sweeps.track.tracking import MlflowTracker

    path = tmp_path / "redact-test.yaml"
    path.write_text(STUDY.format(workdir=tmp_path / "runs", storage=_with_password(pg_url), sample=sample_path))
    spec = load_study(path)
    launch(spec, progress=False)  # parent run and baselines; the 1 s timeout starts no trial

    tracker = MlflowTracker(spec.tracking_uri, spec.name, create=False)
    parent = tracker.client.get_run(tracker.study_runs(spec.name)[0])
    assert parent.data.params["storage"] == redact(_with_password(pg_url)) and "***" in parent.data.params["storage"]
    runs = [parent, *tracker.runs("baseline")]
    for run in runs:
        recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert SECRET not in recorded
    logged = Path(tracker.client.download_artifacts(parent.info.run_id, path.name, str(tmp_path / "dl")))
    assert SECRET not in logged.read_text() and "storage: postgresql://" in logged.read_text()


def test_a_password_never_reaches_the_model_card(tmp_path: Path) -> None:
    from pricer.model.catalog import CATALOG
    from sweeps.results.export import model_card
    from sweeps.results.leaderboard import Row
    from sweeps.track.tracking import MlflowTracker

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "card")
    run_id = tracker.start_run("trial-0")
    tracker.log_metrics(run_id, {"val_mae": 12.5, "val_rmsle": 0.5, "val_hit_rate": 0.25, "val_n": 4})
    row = Row(rank=1, trial=0, model="smollm2-135m-instruct", variant="instruct", lora_r=8, learning_rate=1e-3,
              mae=12.5, mae_low=10.0, mae_high=15.0, rmsle=0.5, hit_rate=0.25, test_mae=None, test_rmsle=None,
              test_hit_rate=None, state="COMPLETE", minutes=1.0, baseline=False,
              run_id=run_id)
    entry = CATALOG["smollm2-135m-instruct"].to_dict()
    card = model_card("card", row, tracker.client.get_run(run_id), entry, "items.jsonl",
                      f"postgresql://mlflow:{SECRET}@db.internal/mlflow", "#1 of 1")
    assert SECRET not in card and "postgresql://mlflow:***@db.internal/mlflow" in card
