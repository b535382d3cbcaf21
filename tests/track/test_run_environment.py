"""The git commit a run records is this project's own, asked once per process, whatever folder
the worker was started in (another repository's commit was recorded before)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO


def test_the_recorded_commit_is_the_projects_own_and_asked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweeps.track.tracking import run_environment, source_commit

    other = tmp_path / "other-repo"
    other.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(other)], check=True)
    subprocess.run([*git, "-C", str(other), "commit", "-q", "--allow-empty", "-m", "other"], check=True)
    theirs = subprocess.run(["git", "-C", str(other), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    ours = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    monkeypatch.chdir(other)
    source_commit.cache_clear()
    tags = [run_environment() for _ in range(3)]
    assert {t["mlflow.source.git.commit"] for t in tags} == {ours} and ours != theirs
    assert source_commit.cache_info().misses == 1
