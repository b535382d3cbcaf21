"""How trial processes start (`sweeps.run.process.trial_context`): forked from a forkserver on a
CPU-only Linux machine, spawned when asked; a wrong value is one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pricer.errors import SpecError
from sweeps.run.process import TRIAL_START_ENV, _has_nvidia, trial_context

cpu_linux = pytest.mark.skipif(sys.platform != "linux" or _has_nvidia(),
                               reason="trials are always spawned on macOS and GPU machines")


@cpu_linux
def test_a_cpu_linux_worker_forks_its_trials_from_a_forkserver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRIAL_START_ENV, raising=False)
    assert trial_context().get_start_method() == "forkserver"


def test_spawn_is_kept_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRIAL_START_ENV, "spawn")
    assert trial_context().get_start_method() == "spawn"


def test_an_unknown_start_method_names_the_variable_and_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRIAL_START_ENV, "fork")
    with pytest.raises(SpecError, match=rf"^{TRIAL_START_ENV}='fork': use forkserver or spawn"):
        trial_context()


def test_a_launch_with_an_unknown_start_method_stops_in_one_line_before_anything_is_made(
        toy_study, tmp_path) -> None:
    study = toy_study("start")
    out = subprocess.run([str(Path(sys.executable).with_name("pricer")), "launch", str(study)],
                         env={**os.environ, TRIAL_START_ENV: "fork"}, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert errors == [f"pricer: error: {TRIAL_START_ENV}='fork': use forkserver or spawn (or leave it unset)"], out.stderr
    assert not (tmp_path / "runs").exists()  # no data, no study, no MLflow store
