"""The study's budget (``n_trials``) pays for trials that trained, not for outages.

Optuna counts a FAIL trial toward ``n_trials`` like any other; five trials that failed because
MLflow was down for a minute used up a cpu-search's whole budget. A trial that fails for a reason
outside its configuration raises `Requeue`: the worker fails it (Optuna FAIL, MLflow FAILED, with
the reason) and queues a copy with the same parameters and user attributes, the way Optuna's
``RetryHeartbeatStaleTrialCallback`` re-queues a dead worker's trial (``failed_trial`` and
``retry_history`` in the copy's system attributes, so the copy resumes from the failed try's
checkpoint). The failed try is marked ``pricer.requeued`` and the study's count
(`sweeps.run.launch.counted`) leaves it out; the copy counts once it runs. Letting Optuna count
(its ``MaxTrialsCallback``) would charge the failure; a count that merely skipped the failures
would lose an enqueued trial's parameters.

What is outside the configuration:

- the tracking store unreachable before the trial trained (not charged, however often: the
  worker backs off instead, `Backoff`, and gives up after `patience_s` of outage);
- a trial process that failed before it started training (a broken environment, the code changed
  under a running worker), a full disk, a stop (Ctrl-C, SIGTERM): re-queued at most
  `MAX_REQUEUES` times per parameters, since such a failure may be permanent, after which the
  trial counts as the FAIL it is.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from pricer.errors import PricerError, SpecError, TrialFailed
from sweeps.run.stop import raise_if_stopped

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
REQUEUED = "pricer.requeued"  # system attr of a FAIL trial whose copy was queued: not counted
REQUEUES = "pricer.requeues"  # system attr: charged re-queues of these parameters so far
MAX_REQUEUES = 3
PATIENCE_ENV, PATIENCE_S = "PRICER_TRACKING_PATIENCE_S", 600
# the longest pause between two trials while the tracking store is down
MAX_BACKOFF_S = 60.0


class Requeue(TrialFailed):
    """The trial failed for a reason outside its configuration; it is re-queued, not charged.

    Args:
        reason: what happened (the trial's ``fail_reason``).
        limited: counts toward `MAX_REQUEUES` (False only for a tracking store that was down
            before the trial trained: nothing ran, and `Backoff` bounds the retries).
    """

    def __init__(self, reason: str, *, limited: bool = True) -> None:
        super().__init__(reason)
        self.limited = limited


def patience_s() -> float:
    """How long a worker waits out a tracking store that is down (``PRICER_TRACKING_PATIENCE_S``).

    Raises:
        SpecError: not a whole number of seconds >= 1.
    """
    raw = os.environ.get(PATIENCE_ENV, "").strip() or str(PATIENCE_S)
    if not raw.isdigit() or int(raw) < 1:
        raise SpecError(f"{PATIENCE_ENV}={os.environ.get(PATIENCE_ENV)!r}: must be a whole number of seconds >= 1 "
                        f"(default {PATIENCE_S})")
    return float(raw)


def requeue(trial: optuna.Trial, *, limited: bool, drop: tuple[str, ...] = ()) -> bool:
    """Queue a copy of `trial` (same parameters and user attributes, less those in `drop`: the
    failed try's run and reason) and mark `trial` not counted. Call it before the trial is failed.

    Returns:
        False when its parameters were re-queued `MAX_REQUEUES` times already (nothing queued:
        the trial counts).
    """
    import optuna

    frozen = trial.storage.get_trial(trial._trial_id)
    system = dict(frozen.system_attrs)
    charged = int(system.get(REQUEUES, 0)) + int(limited)
    if charged > MAX_REQUEUES:
        return False
    system.pop(REQUEUED, None)
    system.update({"failed_trial": system.get("failed_trial", frozen.number),
                   "retry_history": [*system.get("retry_history", []), frozen.number], REQUEUES: charged})
    user = {k: v for k, v in frozen.user_attrs.items() if k not in drop}
    trial.study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, params=frozen.params,
                                                    distributions=frozen.distributions, user_attrs=user,
                                                    system_attrs=system))
    trial.storage.set_trial_system_attr(trial._trial_id, REQUEUED, True)
    return True


class Backoff:
    """Pauses between trials while the tracking store is down: 1, 2, 4... s, at most
    `MAX_BACKOFF_S`, so a worker neither spins through trials nor waits long once it is back.

    Args:
        patience_s: `wait` raises once the store has been down this long without a break.
    """

    def __init__(self, patience_s: float) -> None:
        self.patience_s = patience_s
        self.failures = 0
        self.since: float | None = None

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.since = self.since or time.monotonic()
        self.reason = reason

    def succeeded(self) -> None:
        self.failures, self.since = 0, None

    def wait(self) -> None:
        """Sleep before the next trial if the last ones found the store down.

        Raises:
            TrackingDown: it has been down longer than `patience_s`.
        """
        if not self.failures or self.since is None:
            return
        down = time.monotonic() - self.since
        if down > self.patience_s:
            raise TrackingDown(f"the tracking store has been unreachable for {down:.0f} s ({self.reason}); no "
                               "trial was charged for it: launch the study again once it answers (or raise "
                               f"{PATIENCE_ENV})")
        pause = min(MAX_BACKOFF_S, 2.0 ** (self.failures - 1))
        log.warning("tracking store unreachable (%s); next trial in %.0f s", self.reason, pause)
        end = time.monotonic() + pause
        while time.monotonic() < end:
            raise_if_stopped()
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))


class TrackingDown(PricerError):
    """The tracking store stayed unreachable past the worker's patience."""
