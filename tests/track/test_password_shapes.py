"""A password of every shape `openssl rand -base64` and humans make (``/``, ``@`` written as
``%40``, ``+``, ``%``, ``:``) stays out of every error line, file, MLflow param, tag and artifact,
exported folder and printed line; and the verbs that read a study's stores find them in
``PRICER_STORAGE`` / ``PRICER_TRACKING_URI`` as ``launch`` does. Real PostgreSQL (trust auth
accepts any password) for the Optuna storage, a real MLflow sqlite store."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from sweeps.cli.main import main
from sweeps.track.redact import redact

SHAPES = {"slash": "/", "at": "@", "plus": "+", "percent": "%", "colon": ":"}


def _password(mark: str) -> str:
    return f"{uuid.uuid4().hex[:6]}{mark}{uuid.uuid4().hex[:6]}"


def _in_url(password: str) -> str:
    """The password as a URL holds it: ``@`` and ``%`` encoded, ``/ + :`` raw (SQLAlchemy takes
    them raw, and users paste them so)."""
    return quote(password, safe="/+:")


def _forms(password: str) -> set[str]:
    """Every spelling a leak could take: raw, as written in the URL, fully encoded."""
    return {password, _in_url(password), quote(password, safe="")}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_password_shape_is_masked_in_free_text(shape: str) -> None:
    password = _password(SHAPES[shape])
    for url in (f"postgresql://pricer:{_in_url(password)}@db.internal:5432/optuna?sslmode=require",
                f"postgresql+psycopg://pricer:{_in_url(password)}@db.internal/optuna",
                f"https://pricer:{_in_url(password)}@mlflow.internal:5000"):
        text = f"can't connect to '{url}': refused"
        masked = redact(text)
        assert not any(form in masked for form in _forms(password)), masked
        assert "pricer:***@" in masked and "refused" in masked


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("flag", ["--storage", "--tracking-uri"])
def test_every_password_shape_stays_out_of_the_error_line(shape: str, flag: str, tmp_path: Path,
                                                           sample_path: Path, capsys) -> None:
    password = _password(SHAPES[shape])
    path = tmp_path / "study.yaml"
    path.write_text(f"name: shapes\nworkdir: {tmp_path / 'runs'}\ndata: {{source: {sample_path}, limit: 50}}\n"
                    "search_space:\n  model: {choices: [toy-llama-3.1]}\nn_trials: 1\n")
    # nothing listens on port 1: the preflight fails at once and quotes the URL
    assert main(["launch", str(path), flag, f"postgresql://pricer:{_in_url(password)}@127.0.0.1:1/nodb"]) == 2
    err = capsys.readouterr().err
    assert "pricer:***@127.0.0.1:1/nodb" in err
    assert not any(form in err for form in _forms(password)), err


STUDY = """\
name: shapes-{shape}
workdir: {workdir}
storage: {storage}
data: {{source: {sample}, limit: 120}}
search_space:
  model: {{choices: [toy-llama-3.1]}}
  lora_r: {{choices: [2]}}
fixed: {{max_steps: 1, batch_size: 2, max_tokens: 32, eval_items: 4, test_items: 4, warmup_steps: 0,
        target_modules: attention}}
sampler: {{type: random, seed: 0}}
n_trials: 1
"""


def _connections(url: str) -> int:
    import psycopg
    from conftest import PG_ADMIN

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                             (url.rsplit("/", 1)[1],)).fetchone()[0]


def _export_again_on_a_full_disk(tracking: str, name: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export that fails halfway (the disk fills as the card is written) leaves the previous
    export whole, and the next export replaces it."""
    import errno

    import sweeps.results.export as export_module
    from pricer.predict.predictor import load_predictor

    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(export_module, "model_card", full_disk)
        with pytest.raises(OSError, match="No space left"):
            export_module.export(tracking, name, out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temporaries left
    assert load_predictor(out).kind == "adapter"
    assert export_module.export(tracking, name, out) == out


@pytest.mark.slow
def test_a_password_of_every_shape_reaches_nothing_a_study_writes(tmp_path: Path, sample_path: Path, pg_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    # one password holding every shape: a mask that stops at any of them leaves the rest showing
    # (a launch per shape would cost 2 minutes each on 2 cores)
    password = "".join(_password(mark) for mark in SHAPES.values())
    shape = "all"
    storage = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{_in_url(password)}@")
    tracking = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # not the study's default: only the env says where
    (tmp_path / "store").mkdir()
    study = tmp_path / f"shapes-{shape}.yaml"
    study.write_text(STUDY.format(shape=shape, workdir=tmp_path / "runs", storage=storage, sample=sample_path))
    monkeypatch.chdir(tmp_path)
    # the README's scale-out: the URLs in the environment, not on the command line
    monkeypatch.setenv("PRICER_STORAGE", storage)
    monkeypatch.setenv("PRICER_TRACKING_URI", tracking)

    name = f"shapes-{shape}"
    assert main(["launch", str(study)]) == 0
    # every reader finds the stores by the study's name alone, from the environment
    assert main(["leaderboard", name]) == 0
    assert main(["export", name, "--out", str(tmp_path / "best")]) == 0
    assert main(["export", name, "--out", str(tmp_path / "ensemble"), "--ensemble", "1"]) == 0
    assert main(["report", name, "--out", str(tmp_path / "report.html")]) == 0
    assert _connections(pg_url) == 0, "the report's Optuna engine outlived it"
    _export_again_on_a_full_disk(tracking, name, tmp_path / "best", monkeypatch)
    out, err = capfd.readouterr()
    assert (tmp_path / "best" / "README.md").is_file() and (tmp_path / "ensemble" / "pricer.json").is_file()
    # the report opened the Optuna storage from PRICER_STORAGE (a redacted param can't be opened)
    assert "Optuna storage could not be opened" not in (tmp_path / "report.html").read_text()

    holding = [path.relative_to(tmp_path) for path in tmp_path.rglob("*")
               if path.is_file() and path != study
               and any(form.encode() in path.read_bytes() for form in _forms(password))]
    assert holding == []
    artifacts = [p for p in (tmp_path / "store" / "artifacts").rglob("*") if p.is_file()]
    assert any(p.name == study.name for p in artifacts), "the logged study file was not where the test looked"
    assert any(p.name == "adapter_config.json" for p in artifacts)

    from sweeps.track.tracking import MlflowTracker

    tracker = MlflowTracker(tracking, name, create=False)
    runs = tracker.client.search_runs([tracker.experiment_id])
    recorded = " ".join(v for run in runs for v in (*run.data.params.values(), *run.data.tags.values()))
    assert "postgres:***@" in recorded  # the storage param is there, masked
    printed = out + err
    assert not any(form in recorded or form in printed for form in _forms(password))
