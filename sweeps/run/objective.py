"""The objective: an Optuna trial -> a `TrainConfig` -> `pricer.train.loop.train` in its own
process (`sweeps.run.process`), recorded as a nested MLflow run.

The parent calls ``trial.report`` on the validation price error the trial process reports (never
the eval loss) and answers with ``trial.should_prune()``; each step's train loss streams to MLflow
while the trial runs. A retried trial resumes from the checkpoint its failed try left in the
study's ``trials/`` folder.
"""

from __future__ import annotations

import logging
import shutil
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricer.errors import PricerError, TrialFailed
from sweeps.run import guard
from sweeps.run.process import run_in_child
from sweeps.run.pruning import record_errors
from sweeps.spec.space import suggest, to_config
from sweeps.spec.study import StudySpec
from sweeps.track.records import log_trial_result
from sweeps.track.redact import redact
from sweeps.track.tracking import REASON, ROLE, STATE, TRIAL, MlflowTracker, tracking_errors

if TYPE_CHECKING:
    import optuna

    from pricer.metrics import Metrics
    from pricer.train.config import TrainConfig

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

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        params = suggest(trial, self.spec.search_space)
        work, earlier = self._work(trial.number), self._earlier_tries(trial)
        try:
            run_id = self._start_run(trial)
        except tracking_errors() as exc:
            reason = _tracking_reason(exc)
            trial.set_user_attr(REASON_ATTR, reason)
            raise TrialFailed(reason) from exc
        trial.set_user_attr(RUN_ID_ATTR, run_id)
        try:
            return self._run(trial, run_id, params, work, earlier)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (`sweeps.run.stop`), wherever it lands
            self._fail(trial, run_id, str(exc) or "interrupted (Ctrl-C)", None)
            _remove(work, *earlier)
            raise
        except tracking_errors() as exc:
            # MLflow (a server that went away, a run deleted under the trial) or the pipe to a dead
            # trial process: this trial fails with the reason, and the worker goes on to the next
            reason = _tracking_reason(exc)
            self._fail(trial, run_id, reason, traceback.format_exc())
            _remove(work, *earlier)
            raise TrialFailed(reason) from exc

    def _run(self, trial: optuna.Trial, run_id: str, params: dict, work: Path,
             earlier: list[Path]) -> float | tuple[float, float]:
        import optuna

        from pricer.model import catalog

        try:
            config = to_config(self.spec, params)
            model_spec = catalog.resolve(config.model, self.spec.models)
            self.tracker.set_tags(run_id, {"pricer.model": config.model, "pricer.variant": model_spec.variant,
                                           "pricer.family": model_spec.family})
            self.tracker.log_params(run_id, {**config.to_dict(), **{f"optuna.{k}": v for k, v in params.items()}})
            self.tracker.log_json(run_id, _spec_dict(model_spec), "catalog_entry.json")
            self._guard(trial, run_id, config, model_spec)
            resume_from = next((w / "checkpoint" for w in earlier if (w / "checkpoint").is_dir()), None)
            if resume_from is not None:
                self.tracker.set_tags(run_id, {RESUMED: str(resume_from.parent.name)})
            losses = LiveLosses(self.tracker, run_id)
            try:
                result, devices = run_in_child(config, self.data, work / "adapter", model_spec,
                                               lambda step, m: self._report(trial, run_id, step, m),
                                               on_loss=losses, checkpoint_dir=work / "checkpoint",
                                               resume_from=resume_from, timeout_s=self.spec.trial_timeout,
                                               progress=self.progress)
            finally:
                losses.flush()
        except PricerError as exc:
            self._fail(trial, run_id, str(exc), getattr(exc, "details", None))
            _remove(work, *earlier)  # a FAIL trial is not retried: its checkpoints are of no use
            raise exc if isinstance(exc, TrialFailed) else TrialFailed(str(exc)) from exc

        gpu_hours = result.wall_s / 3600 * devices
        log_trial_result(self.tracker, run_id, result, gpu_hours=gpu_hours, streamed=losses.steps)
        if result.resumed_from is not None:
            self.tracker.log_metrics(run_id, {"resumed_from_step": result.resumed_from})
        # the worker's own memory after each trial: flat unless something leaks across trials
        self.tracker.log_metrics(run_id, {"worker_rss_gib": guard.rss_gib()})
        _remove(work, *earlier)  # the adapter now lives in MLflow; the checkpoints are spent
        if result.stopped_early:
            # FINISHED, not KILLED: MLflow's UI draws KILLED as a failure (a red cross); the
            # state tag says PRUNED
            self.tracker.set_tags(run_id, {STATE: "PRUNED"})
            self.tracker.end_run(run_id, "FINISHED")
            raise optuna.TrialPruned(f"pruned at step {result.steps}: validation "
                                     f"{self.spec.objective.metric} {self._value(result.val_metrics):.4g}")
        self.tracker.set_tags(run_id, {STATE: "COMPLETE"})
        self.tracker.end_run(run_id, "FINISHED")
        value = self._value(result.val_metrics)
        return (value, gpu_hours) if self.spec.objective.gpu_hours else value

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

    def _report(self, trial: optuna.Trial, run_id: str, step: int, metrics: Metrics) -> bool:
        self.tracker.log_metrics(run_id, _val(metrics), step=step)
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

    def _fail(self, trial: optuna.Trial, run_id: str, reason: str, details: str | None) -> None:
        """Record the failure in Optuna, then in MLflow as far as MLflow answers (it may be the
        reason): the trial's state must not wait on the tracking store."""
        reason = redact(reason)  # a driver's error quotes the URL it failed on, password and all
        trial.set_user_attr(REASON_ATTR, reason[:2000])
        try:
            self.tracker.log_metrics(run_id, {"worker_rss_gib": guard.rss_gib()})
            self.tracker.set_tags(run_id, {STATE: "FAIL", REASON: reason})
            if details:
                self.tracker.log_json(run_id, {"reason": reason, "traceback": redact(details)}, "failure.json")
            self.tracker.end_run(run_id, "FAILED")
        except tracking_errors() as exc:
            log.warning("trial %d: failed (%s), and MLflow could not record it: %s", trial.number, reason,
                        _tracking_reason(exc))


class LiveLosses:
    """``on_loss`` for `run_in_child`: each step's train loss to MLflow while the trial runs,
    batched every `LOSS_FLUSH_S` seconds; `steps` are the ones logged (not to log them again)."""

    def __init__(self, tracker: MlflowTracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id
        self.pending: list[tuple[int, float]] = []
        self.steps: set[int] = set()
        self.flushed = time.monotonic()

    def __call__(self, step: int, loss: float) -> None:
        self.pending.append((step, loss))
        if time.monotonic() - self.flushed >= LOSS_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        for step, loss in self.pending:
            self.tracker.log_metrics(self.run_id, {"train_loss": loss}, step=step)
            self.steps.add(step)
        self.pending.clear()
        self.flushed = time.monotonic()


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
