"""The objective: an Optuna trial -> a `TrainConfig` -> `pricer.train.loop.train` in its own
process (`sweeps.run.process`), recorded as a nested MLflow run.

The parent calls ``trial.report`` on the validation price error the trial process reports (never
the eval loss) and answers with ``trial.should_prune()``; each step's train loss streams to MLflow
while the trial runs. A retried trial resumes from the checkpoint its failed try left in the
study's ``trials/`` folder.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricer.errors import PricerError, TrialFailed
from pricer.machine import rss_gib
from pricer.phases import phase, record
from sweeps.run import guard
from sweeps.run.budget import Backoff, Requeue, patience_s, requeue
from sweeps.run.process import run_in_child
from sweeps.run.pruning import record_errors
from sweeps.run.stop import raise_if_stopped
from sweeps.spec.space import suggest, to_config
from sweeps.spec.study import StudySpec
from sweeps.track.records import log_trial_result
from sweeps.track.redact import redact
from sweeps.track.tracking import REASON, ROLE, STATE, TRIAL, MlflowTracker, tracking_errors

if TYPE_CHECKING:
    import optuna

    from pricer.metrics import Metrics
    from pricer.train.config import TrainConfig
    from pricer.train.loop import Result

log = logging.getLogger(__name__)
RUN_ID_ATTR, REASON_ATTR = "mlflow_run_id", "fail_reason"
RESUMED = "pricer.resumed_from_trial"
# Live train losses reach MLflow in batches this far apart (a step of a tiny model takes ~0.3 s).
LOSS_FLUSH_S = 5.0


class Objective:
    """The callable handed to ``study.optimize``: one trial, recorded in MLflow as it goes.

    Args:
        spec: the study.
        data: the built dataset folder every trial trains on.
        tracker: the study's MLflow store.
        parent_id: the study's parent run; each trial is a nested run under it.
    """

    def __init__(self, spec: StudySpec, data: str, tracker: MlflowTracker, parent_id: str, *,
                 progress: bool = False) -> None:
        self.spec, self.data, self.tracker, self.parent_id = spec, data, tracker, parent_id
        self.progress = progress
        self.backoff = Backoff(patience_s())  # the launch loop waits on it between trials

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        params = suggest(trial, self.spec.search_space)
        work, earlier = self._work(trial.number), self._earlier_tries(trial)
        try:
            run_id = self._start_run(trial)
        except tracking_errors() as exc:
            # nothing ran: re-queued, not charged; the worker backs off before its next trial
            reason = _tracking_reason(exc)
            self.backoff.failed(reason)
            requeue(trial, limited=False, drop=(RUN_ID_ATTR, REASON_ATTR))
            trial.set_user_attr(REASON_ATTR, f"{reason} (re-queued)")
            raise Requeue(reason, limited=False) from exc
        self.backoff.succeeded()
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        try:
            return self._run(trial, run_id, params, work, earlier)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (`sweeps.run.stop`), wherever it lands
            # a stop is not the configuration's fault: the next launch runs the trial again, from its checkpoint
            self._fail(trial, run_id, str(exc) or "interrupted (Ctrl-C)", None, work, earlier, queue=True)
            raise
        except Requeue as exc:
            if not exc.limited:
                self.backoff.failed(str(exc))
            self._fail(trial, run_id, str(exc), getattr(exc, "details", None), work, earlier, queue=True,
                       limited=exc.limited)
            raise
        except PricerError as exc:
            self._fail(trial, run_id, str(exc), getattr(exc, "details", None), work, earlier)
            raise exc if isinstance(exc, TrialFailed) else TrialFailed(str(exc)) from exc
        except tracking_errors() as exc:
            # the pipe to a dead trial process, a run deleted under the trial: this trial fails
            # with the reason, and the worker goes on to the next
            reason = _tracking_reason(exc)
            self._fail(trial, run_id, reason, traceback.format_exc(), work, earlier)
            raise TrialFailed(reason) from exc

    def _run(self, trial: optuna.Trial, run_id: str, params: dict, work: Path,
             earlier: list[Path]) -> float | tuple[float, float]:
        import optuna

        from pricer.model import catalog

        config = to_config(self.spec, params)
        model_spec = catalog.resolve(config.model, self.spec.models)
        try:
            self.tracker.set_tags(run_id, {"pricer.model": config.model, "pricer.variant": model_spec.variant,
                                           "pricer.family": model_spec.family})
            self.tracker.log_params(run_id, {**config.to_dict(), **{f"optuna.{k}": v for k, v in params.items()}})
            self.tracker.log_json(run_id, _spec_dict(model_spec), "catalog_entry.json")
            with phase("memory guard", children=False):
                self._guard(trial, run_id, config, model_spec)
        except tracking_errors() as exc:
            raise Requeue(_tracking_reason(exc), limited=False) from exc  # before training: not charged
        resume_from = next((w / "checkpoint" for w in earlier if (w / "checkpoint").is_dir()), None)
        live = LiveMetrics(self.tracker, run_id)
        if resume_from is not None:
            live.tags[RESUMED] = str(resume_from.parent.name)
        # the worker's own CPU only: the trial process measures itself (`Result.phases`)
        with phase("worker while its trial runs", children=False):
            result, devices = run_in_child(config, self.data, work / "adapter", model_spec,
                                           lambda step, m: self._report(trial, live, step, m),
                                           on_loss=live.loss, checkpoint_dir=work / "checkpoint",
                                           resume_from=resume_from, timeout_s=self.spec.trial_timeout,
                                           progress=self.progress)
        record(result.phases)
        gpu_hours = result.wall_s / 3600 * devices
        state = "PRUNED" if result.stopped_early else "COMPLETE"
        try:
            # the trial trained: its results wait out a tracking store that is down, rather than be lost
            with phase("log the trial to MLflow", children=False):
                patiently(lambda: self._record(run_id, live, result, gpu_hours, state),
                          what=f"trial {trial.number}")
        except tracking_errors() as exc:
            # still down past the patience: the retry resumes from the checkpoint this try left
            raise Requeue(f"{_tracking_reason(exc)} (while recording its results)") from exc
        except Exception as exc:  # noqa: BLE001 -- any bug in recording fails this trial, not the worker
            raise TrialFailed(f"recording its results failed: {type(exc).__name__}: {exc}") from exc
        _remove(work, *earlier)  # the adapter now lives in MLflow; the checkpoints are spent
        if result.stopped_early:
            raise optuna.TrialPruned(f"pruned at step {result.steps}: validation "
                                     f"{self.spec.objective.metric} {self._value(result.val_metrics):.4g}")
        value = self._value(result.val_metrics)
        return (value, gpu_hours) if self.spec.objective.gpu_hours else value

    def _record(self, run_id: str, live: LiveMetrics, result: Result, gpu_hours: float, state: str) -> None:
        """A trained trial's results in MLflow, its run ended (FINISHED, not KILLED, for a pruned
        one: MLflow's UI draws KILLED as a failure, a red cross; the state tag says PRUNED)."""
        live.flush(strict=True)
        log_trial_result(self.tracker, run_id, result, gpu_hours=gpu_hours, streamed=live.steps)
        if result.resumed_from is not None:
            self.tracker.log_metrics(run_id, {"resumed_from_step": result.resumed_from})
        # the worker's own memory after each trial: flat unless something leaks across trials
        self.tracker.log_metrics(run_id, {"worker_rss_gib": rss_gib()})
        self.tracker.set_tags(run_id, {STATE: state})
        self.tracker.end_run(run_id, "FINISHED")

    def _start_run(self, trial: optuna.Trial) -> str:
        """The trial's MLflow run, nested under the study's parent run."""
        return self.tracker.start_run(f"trial-{trial.number}", parent_id=self.parent_id,
                                      tags={ROLE: "trial", TRIAL: str(trial.number), STATE: "RUNNING",
                                            "pricer.optuna_trial_id": str(trial._trial_id)})

    def _work(self, number: int) -> Path:
        """A trial's folder: ``adapter/`` (until MLflow has it) and ``checkpoint/``."""
        return Path(self.spec.workdir).resolve() / "trials" / f"{number:05d}"

    def _earlier_tries(self, trial: optuna.Trial) -> list[Path]:
        """The folders of the tries a heartbeat retry replaces, latest first (Optuna gives a
        retried trial a new number and records the old ones in ``retry_history``)."""
        history = trial.storage.get_trial_system_attrs(trial._trial_id).get("retry_history") or []
        return [self._work(n) for n in reversed(history)]

    def _value(self, metrics: Metrics) -> float:
        return float(getattr(metrics, self.spec.objective.metric))

    def _report(self, trial: optuna.Trial, live: LiveMetrics, step: int, metrics: Metrics) -> bool:
        live.add(_val(metrics), step)
        live.flush()
        if self.spec.objective.gpu_hours:
            return False  # Optuna can't prune multi-objective trials
        if metrics.errors:
            record_errors(trial, step, metrics.errors)
        trial.report(self._value(metrics), step)
        return trial.should_prune()

    def _guard(self, trial: optuna.Trial, run_id: str, config: TrainConfig, model_spec) -> None:
        """Prune, before loading, a config whose estimated peak can't fit (`sweeps.run.guard`)."""
        import optuna

        memory = guard.check(config, model_spec)
        if memory.estimate is not None:
            self.tracker.log_metrics(run_id, {"estimated_peak_gib": memory.estimate.total,
                                              "memory_budget_gib": memory.budget_gib})
        if not memory.fits:
            trial.set_user_attr(REASON_ATTR, memory.reason)
            self.tracker.set_tags(run_id, {STATE: "PRUNED", REASON: memory.reason})
            self.tracker.end_run(run_id, "FINISHED")
            raise optuna.TrialPruned(memory.reason)

    def _fail(self, trial: optuna.Trial, run_id: str, reason: str, details: str | None, work: Path,
              earlier: list[Path], *, queue: bool = False, limited: bool = True) -> None:
        """Record the failure in Optuna (re-queuing the trial when `queue`: `sweeps.run.budget`),
        then in MLflow as far as MLflow answers (it may be the reason): the trial's state must not
        wait on the tracking store. A run left RUNNING here is ended by `end_orphan_runs`. The
        trial's folders go, unless its re-queued copy resumes from their checkpoint."""
        reason = redact(reason)  # a driver's error quotes the URL it failed on, password and all
        queued = queue and requeue(trial, limited=limited, drop=(RUN_ID_ATTR, REASON_ATTR))
        if queued:
            reason += " (re-queued: not charged to the study's n_trials)"
        else:
            _remove(work, *earlier)
        trial.set_user_attr(REASON_ATTR, reason[:2000])
        try:
            self.tracker.log_metrics(run_id, {"worker_rss_gib": rss_gib()})
            self.tracker.set_tags(run_id, {STATE: "FAIL", REASON: reason})
            if details:
                self.tracker.log_json(run_id, {"reason": reason, "traceback": redact(details)}, "failure.json")
            self.tracker.end_run(run_id, "FAILED")
        except tracking_errors() as exc:
            log.warning("trial %d: failed (%s), and MLflow could not record it: %s", trial.number, reason,
                        _tracking_reason(exc))


class LiveMetrics:
    """What a trial logs while it trains: each step's train loss (``on_loss`` for `run_in_child`;
    the first at once, so MLflow shows a trial training from its first step, then batched every
    `LOSS_FLUSH_S` seconds), the validation reports and tags. A tracking store that
    is down keeps them pending (the trial goes on training); `steps` are the train-loss steps
    logged (not to log them again)."""

    def __init__(self, tracker: MlflowTracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id
        self.pending: list[tuple[dict[str, float], int]] = []
        self.tags: dict[str, str] = {}
        self.steps: set[int] = set()
        self.flushed = -math.inf

    def loss(self, step: int, loss: float) -> None:
        self.add({"train_loss": loss}, step)
        if time.monotonic() - self.flushed >= LOSS_FLUSH_S:
            self.flush()

    def add(self, metrics: dict[str, float], step: int) -> None:
        self.pending.append((metrics, step))

    def flush(self, *, strict: bool = False) -> None:
        """Log what is pending; on a tracking error keep it for the next flush (re-raise if `strict`)."""
        self.flushed = time.monotonic()
        try:
            if self.tags:
                self.tracker.set_tags(self.run_id, self.tags)
                self.tags = {}
            while self.pending:
                metrics, step = self.pending[0]
                self.tracker.log_metrics(self.run_id, metrics, step=step)
                if "train_loss" in metrics:
                    self.steps.add(step)
                self.pending.pop(0)
        except tracking_errors() as exc:
            if strict:
                raise
            log.warning("MLflow did not take the live metrics (%s); kept for later", _tracking_reason(exc))


def patiently(call: Callable[[], None], *, what: str) -> None:
    """``call()``, tried again while the tracking store is down (1, 2, 4... s apart, up to
    `sweeps.run.budget.patience_s`); its last error propagates."""
    deadline = time.monotonic() + patience_s()
    pause = 1.0
    while True:
        try:
            return call()
        except tracking_errors() as exc:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("%s: MLflow unreachable (%s); trying again in %.0f s", what, _tracking_reason(exc), pause)
        end = time.monotonic() + pause
        while time.monotonic() < end:
            raise_if_stopped()
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
        pause = min(pause * 2, 60.0)


def _tracking_reason(exc: BaseException) -> str:
    where = "MLflow" if type(exc).__module__.startswith(("mlflow", "requests", "urllib3")) else "tracking"
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return redact(f"{where} error: {type(exc).__name__}: {line}"[:1000])


def _remove(*folders: Path) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _val(metrics: Metrics) -> dict[str, float]:
    return {"val_mae": metrics.mae, "val_rmsle": metrics.rmsle, "val_hit_rate": metrics.hit_rate}


def _spec_dict(model_spec: Any) -> dict:
    import dataclasses

    return model_spec.to_dict() if hasattr(model_spec, "to_dict") else dataclasses.asdict(model_spec)
