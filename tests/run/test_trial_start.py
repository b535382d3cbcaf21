"""How trial processes start (`sweeps.run.process.trial_context`): forked from a forkserver on a
CPU-only Linux machine, spawned when asked; a wrong value is one line naming the variable."""

from __future__ import annotations

import sys

import pytest

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
    with pytest.raises(ValueError, match=rf"^{TRIAL_START_ENV}='fork': use forkserver or spawn$"):
        trial_context()
