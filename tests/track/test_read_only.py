"""Commands that read a study change nothing and fetch nothing: a deleted experiment stays deleted,
and resolving a study file that names a hub model asks no server."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from sweeps.track.tracking import MlflowTracker


def test_leaderboard_on_a_deleted_experiment_says_so_and_leaves_it_deleted(tmp_path: Path, capsys) -> None:
    from sweeps.cli.main import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "gone")
    tracker.study_run("gone", {"pricer.objective": "mae"})
    tracker.client.delete_experiment(tracker.experiment_id)

    capsys.readouterr()  # MLflow's own lines about creating its tables
    assert main(["leaderboard", "gone", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is deleted" in err[0] and "restore" in err[0], err
    assert tracker.client.get_experiment(tracker.experiment_id).lifecycle_stage == "deleted"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list:
    """A local socket standing in for the hub (HF_ENDPOINT): the connections it receives."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    seen: list = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            seen.append(conn.recv(200))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub reads these once, at import: a suite that imported it earlier (offline, with
    # the real endpoint) would otherwise never reach the stand-in
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "ENDPOINT", endpoint)
    monkeypatch.setattr(hf, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    yield seen
    stop.set()
    thread.join()
    server.close()


def test_resolving_a_study_file_with_a_hub_model_fetches_nothing(tmp_path: Path, hub: list) -> None:
    from sweeps.spec.study import load_study, locate

    study = tmp_path / "hubby.yaml"
    study.write_text("name: hubby\ndata: {source: items.jsonl}\nsearch_space:\n"
                     "  model: {choices: [someone/tiny-llm]}\n  lora_r: {choices: [4]}\nn_trials: 1\n")
    assert locate(study) == ("hubby", "sqlite:///runs/hubby/mlflow.db")
    assert hub == []
    # a launch does check the model against the hub: the fixture's server is what it reaches
    with pytest.raises(Exception):  # noqa: B017 -- whatever the hub client makes of a closed socket
        load_study(study)
    assert hub, "the check above should have asked the stand-in hub (is HF_ENDPOINT honoured?)"


def test_report_on_a_study_file_with_a_hub_model_fetches_nothing(tmp_path: Path, hub: list, capsys) -> None:
    from sweeps.cli.main import main

    study = tmp_path / "hubby.yaml"
    study.write_text("name: hubby\ndata: {source: items.jsonl}\nsearch_space:\n"
                     "  model: {choices: [someone/tiny-llm]}\n  lora_r: {choices: [4]}\nn_trials: 1\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    capsys.readouterr()
    # never launched: the report says so in one line, having asked the hub nothing
    assert main(["report", str(study), "--tracking-uri", uri, "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hubby" in err[0], err
    assert hub == []
