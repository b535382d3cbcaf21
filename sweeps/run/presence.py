"""The roll of a study's workers, kept in its Optuna storage: who is still at work, and who leaves last.

Every worker (`sweeps.run.launch.launch`) shares the study's one MLflow parent run. Ending it at
each worker's exit marked it FINISHED while others still ran trials; now each worker writes its
own entry (``pricer.worker:<host>:<pid>:<tag>`` in the study's system attributes: one key per
worker, so writers never overwrite each other), refreshes it every heartbeat from a thread, and
marks it left on its way out. The worker that finds no other entry alive, and is the latest to
leave, ends the parent run. A worker killed outright (SIGKILL, a lost machine) stops refreshing;
after the heartbeat grace period it no longer counts as alive.

Limit: "latest to leave" compares the workers' clocks. Workers leaving together on machines whose
clocks differ by more than the moment between their exits may both think the other is the last
(the run is then left RUNNING until the next launch, which reopens it anyway); one machine, or
NTP-synchronised ones, have no such gap. Likewise a worker killed between trials less than the
grace period before the last one leaves still counts as alive, and the run is left RUNNING.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING

from sweeps.track.records import log_study_plots
from sweeps.track.redact import redact
from sweeps.track.tracking import PARENT_ENDS, MlflowTracker, tracking_errors

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
PREFIX = "pricer.worker:"


class Presence:
    """This worker's entry on the roll, refreshed every `heartbeat_s` until `leave`.

    Args:
        study: the study whose storage holds the roll.
        heartbeat_s: how often the entry is refreshed.
        grace_s: an entry not refreshed for this long belongs to a dead worker.
    """

    def __init__(self, study: optuna.Study, heartbeat_s: float, grace_s: float) -> None:
        self.storage, self.study_id = study._storage, study._study_id
        self.key = f"{PREFIX}{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.heartbeat_s, self.grace_s = heartbeat_s, grace_s
        self.joined = time.time()
        self._stop = threading.Event()
        self._write(left=None)
        self._thread = threading.Thread(target=self._beat, name="pricer-presence", daemon=True)
        self._thread.start()

    def _write(self, left: float | None) -> None:
        self.storage.set_study_system_attr(self.study_id, self.key,
                                           {"seen": time.time(), "left": left, "joined": self.joined})

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self._write(left=None)
            except Exception as exc:  # noqa: BLE001 -- a missed beat is retried at the next one
                log.warning("worker roll: could not refresh %s (%s)", self.key, exc)

    def alive(self, roll: dict[str, dict] | None = None) -> list[str]:
        """The other workers whose entries are fresh and not marked left (on `roll`, if read already)."""
        now = time.time()
        return [k for k, v in (self._roll() if roll is None else roll).items()
                if k != self.key and v.get("left") is None and now - float(v.get("seen", 0)) < self.grace_s]

    def rank(self) -> int:
        """How many workers now alive joined the roll before this one (0: the first). Workers
        started together each count the others that wrote their entry first, so no two share one."""
        roll = self._roll()
        mine = (self.joined, self.key)
        return sum((float(roll[k].get("joined", roll[k].get("seen", 0))), k) < mine for k in self.alive(roll))

    def _roll(self) -> dict[str, dict]:
        attrs = self.storage.get_study_system_attrs(self.study_id)
        return {k: v for k, v in attrs.items() if k.startswith(PREFIX) and isinstance(v, dict)}

    def leave(self) -> bool:
        """Mark this worker left; True when it is the last one out (it should end the parent run)."""
        self._stop.set()
        self._thread.join(timeout=5)
        left = time.time()
        self._write(left=left)
        if self.alive():
            return False
        # every other entry has left or gone stale: the latest to leave ends the run (two workers
        # leaving together each see the other gone; exactly one of them is the latest)
        mine = (left, self.key)
        return all((float(v.get("left") or v.get("seen", 0)), k) < mine
                   for k, v in self._roll().items() if k != self.key)


def end_parent_run(tracker: MlflowTracker, parent_id: str, study: optuna.Study) -> None:
    """What the last worker out does: the runs left RUNNING ended, the study's plots logged, the
    parent run ended. A tracking store that is down now leaves them to the next launch (which
    reopens the parent run and ends the orphans anyway): a stop must not wait on it."""
    try:
        end_orphan_runs(tracker, study)
        log_study_plots(tracker, parent_id, study)
        tracker.end_run(parent_id, "FINISHED")
        # one entry per end: a fleet's soak counts them (exactly one per launch of the fleet)
        tracker.log_metrics(parent_id, {PARENT_ENDS: 1}, step=os.getpid())
    except tracking_errors() as exc:
        log.warning("study %s: could not end its MLflow parent run (%s); the next launch will", study.study_name,
                    redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__))


def end_orphan_runs(tracker: MlflowTracker, study: optuna.Study) -> list[str]:
    """End the trial and refit runs left RUNNING in MLflow whose Optuna trial is over: a worker
    that failed a trial while MLflow was down, or died, could not end them. FAILED unless the
    trial completed or was pruned.

    Returns:
        The runs ended.
    """
    from optuna.trial import TrialState

    runs = tracker.client.search_runs([tracker.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                      max_results=1000)
    ended = []
    for run in runs:
        trial_id = run.data.tags.get("pricer.optuna_trial_id")
        if not trial_id or not trial_id.isdigit():
            continue
        try:
            state = study._storage.get_trial(int(trial_id)).state
        except KeyError:  # a trial of another storage
            continue
        if state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        tracker.end_run(run.info.run_id, "FINISHED" if state in (TrialState.COMPLETE, TrialState.PRUNED) else "FAILED")
        ended.append(run.info.run_id)
    return ended
