"""The trial loop: an Optuna trial -> a `TrainConfig` -> `pricer.train.loop.train` in its own process.

Each fine-tune runs in a fresh process so its memory (model, optimizer, CUDA context) is
returned to the OS when it ends, and a crash (OOM kill, segfault) fails one trial instead of the
study (spawned; on a CPU machine optionally forked from a forkserver that imported torch,
transformers and peft once: `trial_context`). The child's ``report(step, metrics)`` /
``should_stop()`` callbacks cross a Pipe: the parent calls ``trial.report`` on the validation
price error (never the eval loss) and answers with ``trial.should_prune()``; each step's train
loss crosses it too, one way, so MLflow shows the curve while the trial runs. The child dies with its worker, and a retried trial resumes from the
checkpoint its failed try left in the study's ``trials/`` folder.
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pricer.errors import PricerError, TrialFailed
from sweeps.run import guard
from sweeps.run.budget import Backoff, Requeue, patience_s, requeue
from sweeps.run.pruning import record_errors
from sweeps.run.stop import raise_if_stopped
from sweeps.spec.space import suggest, to_config
from sweeps.spec.study import StudySpec
from sweeps.track.redact import redact
from sweeps.track.tracking import REASON, ROLE, STATE, TRIAL, MlflowTracker, log_trial_result, tracking_errors

if TYPE_CHECKING:
    import optuna

    from pricer.metrics import Metrics
    from pricer.train.loop import Result, TrainConfig

log = logging.getLogger(__name__)
RUN_ID_ATTR, REASON_ATTR = "mlflow_run_id", "fail_reason"
RESUMED = "pricer.resumed_from_trial"
# How often the parent wakes to check that the child is still alive (and to let Ctrl-C in).
POLL_S = 1.0
# Live train losses reach MLflow in batches this far apart (a step of a tiny model takes ~0.3 s).
LOSS_FLUSH_S = 5.0
# What a CPU trial process finds imported: ~12 s of CPU each trial paid again under ``spawn``;
# this module too, so a trial runs the worker's code, not a file edited since the worker started.
PRELOAD = ("torch", "transformers.modeling_utils", "peft", "pricer.train.loop", "sweeps.run.objective")
# A trial process's name in ps/top/psutil (Linux: at most 15 bytes).
PROCESS_NAME = b"pricer-trial"


def trial_context():
    """The multiprocessing context trial processes start from.

    ``spawn`` by default. With ``PRICER_TRIAL_START=forkserver`` on Linux with no NVIDIA device: a
    forkserver that has imported `PRELOAD` once per worker, so a trial starts in a second instead
    of re-importing torch, transformers and peft (opt-in: the suite does not cover it). Never on a
    GPU machine (a CUDA process can't be forked; bitsandbytes initialises CUDA at import) or macOS
    (it forbids forking what has loaded its frameworks). The forkserver's environment and working folder are the worker's when it
    started; `_child` applies the worker's current ones.
    """
    if (sys.platform != "linux" or os.environ.get("PRICER_TRIAL_START") != "forkserver"
            or _has_nvidia()):
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def _has_nvidia() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/proc/driver/nvidia/gpus").is_dir()


def _die_with(worker_pid: int) -> None:
    """End this process when the worker that started it dies, even by ``kill -9``: an orphan
    would go on holding its GPU for a trial nobody records. Linux kills it at once (the parent
    death signal; a forkserver's child's parent is the forkserver, which ends with its worker);
    everywhere a thread sees the worker gone within a second."""
    parent = os.getppid()
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1  # noqa: N806 -- <sys/prctl.h>
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(PROCESS_NAME))

    def alive() -> bool:
        if os.getppid() != parent:  # re-parented: whoever started this process is gone
            return False
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def watch() -> None:
        while alive():
            time.sleep(1.0)
        os._exit(1)

    if not alive():  # died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="pricer-die-with-worker", daemon=True).start()


def _child(conn, config: TrainConfig, data: str, out: Path, model_spec, progress: bool, worker_pid: int,
           checkpoint_dir: Path | None, resume_from: Path | None, env: dict[str, str], cwd: str) -> None:
    """Runs in the trial process: the fine-tune, with its callbacks relayed to the parent."""
    _die_with(worker_pid)
    if os.environ != env:  # a forkserver keeps the environment it started with
        os.environ.clear()
        os.environ.update(env)
    os.chdir(cwd)
    # Ctrl-C in a terminal reaches the whole process group: the parent alone decides (it fails
    # the trial, ends its MLflow run, then terminates this process)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = False

    def report(step: int, metrics: Metrics) -> None:
        nonlocal stop
        conn.send(("report", step, metrics))
        stop = bool(conn.recv())

    try:
        from tqdm import tqdm

        # tqdm's default lock is a multiprocessing semaphore that the spawn resource tracker
        # reports as "leaked" when this process ends; the bars here need only a thread lock
        tqdm.set_lock(threading.RLock())
        guard.cap_process()
        from pricer.train.loop import train

        conn.send(("training",))  # what failed before this is the environment's fault, not the trial's
        result = train(config, data, out, spec=model_spec, report=report, should_stop=lambda: stop,
                       on_loss=lambda step, loss: conn.send(("loss", step, loss)),
                       checkpoint_dir=checkpoint_dir, resume_from=resume_from, progress=progress)
        import torch

        conn.send(("result", result, max(1, torch.cuda.device_count())))
    except BaseException as exc:  # noqa: B036 -- the reason must reach the parent, whatever it is
        full = _disk_full(checkpoint_dir or out)
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(), full))
        raise SystemExit(1) from None
    finally:
        conn.close()


def _disk_full(folder: Path) -> bool:
    """Whether `folder`'s disk takes no more (full, over quota, or past this process's file-size
    limit). Asked after a trial failed: torch reports a failed write as a RuntimeError, whatever
    the cause, so the error alone can't tell a full disk from a bug."""
    probe = Path(folder) / f".disk-probe-{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        with probe.open("wb") as handle:
            handle.write(b"\0" * (1 << 20))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    finally:
        probe.unlink(missing_ok=True)
    return False


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (killed: out of host memory?)" if name == "SIGKILL" else ""
        return f"trial process died from {name}{hint}"
    return f"trial process exited with code {exitcode} before reporting a result"


def run_in_child(config: TrainConfig, data: str, out: Path, model_spec,
                 on_report: Callable[[int, Metrics], bool], *,
                 on_loss: Callable[[int, float], None] | None = None, checkpoint_dir: Path | None = None,
                 resume_from: Path | None = None, timeout_s: float | None = None,
                 progress: bool = False) -> tuple[Result, int]:
    """Run one fine-tune in its own process (`trial_context`).

    Args:
        on_report: called in this process for each validation report; returns "stop now".
        on_loss: called in this process with (step, train loss) after each step.
        checkpoint_dir / resume_from: `pricer.train.loop.train`'s.
        timeout_s: the child is stopped and the trial failed when it runs longer.

    Returns:
        (the trial's `Result`, the number of accelerators it ran on, >= 1).

    Raises:
        Requeue: the child failed before it started training (a broken environment, the code
            changed under the worker), or on a full disk.
        TrialFailed: the child raised (its exception in the message), died, or ran past `timeout_s`.
    """
    ctx = trial_context()
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, config, data, out, model_spec, progress, os.getpid(),
                                            checkpoint_dir, resume_from, dict(os.environ), os.getcwd()),
                       name=f"pricer-trial-{out.name}")
    started = time.monotonic()
    proc.start()
    child.close()  # so recv() sees EOF when the child exits
    training = False
    try:
        while True:
            raise_if_stopped()
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise TrialFailed(f"trial_timeout of {timeout_s:g} s exceeded")
            if not parent.poll(POLL_S):
                if not proc.is_alive() and not parent.poll(0):
                    proc.join()
                    raise _failed(_death(proc.exitcode), training)
                continue
            try:
                message = parent.recv()
            except EOFError:
                proc.join(30)
                raise _failed(_death(proc.exitcode), training) from None
            if message[0] == "training":
                training = True
            elif message[0] == "loss":
                if on_loss:
                    on_loss(message[1], message[2])
            elif message[0] == "report":
                answer = bool(on_report(message[1], message[2]))
                try:
                    parent.send(answer)
                except (BrokenPipeError, ConnectionResetError):  # the child died meanwhile
                    proc.join(30)
                    raise TrialFailed(_death(proc.exitcode)) from None
            elif message[0] == "result":
                return message[1], message[2]
            else:
                failed = _failed(message[1], training and not message[3])
                failed.details = message[2]
                raise failed
    finally:
        parent.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
        if proc.is_alive():
            proc.kill()
        proc.join()


def _failed(reason: str, charged: bool) -> TrialFailed:
    """A trial process's failure: charged to the study's budget once it trains (`sweeps.run.budget`)."""
    return TrialFailed(reason) if charged else Requeue(reason)


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
            self._guard(trial, run_id, config, model_spec)
        except tracking_errors() as exc:
            raise Requeue(_tracking_reason(exc), limited=False) from exc  # before training: not charged
        resume_from = next((w / "checkpoint" for w in earlier if (w / "checkpoint").is_dir()), None)
        live = LiveMetrics(self.tracker, run_id)
        if resume_from is not None:
            live.tags[RESUMED] = str(resume_from.parent.name)
        result, devices = run_in_child(config, self.data, work / "adapter", model_spec,
                                       lambda step, m: self._report(trial, live, step, m),
                                       on_loss=live.loss, checkpoint_dir=work / "checkpoint",
                                       resume_from=resume_from, timeout_s=self.spec.trial_timeout,
                                       progress=self.progress)
        gpu_hours = result.wall_s / 3600 * devices
        state = "PRUNED" if result.stopped_early else "COMPLETE"
        try:
            # the trial trained: its results wait out a tracking store that is down, rather than be lost
            patiently(lambda: self._record(run_id, live, result, gpu_hours, state), what=f"trial {trial.number}")
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
        self.tracker.log_metrics(run_id, {"worker_rss_gib": guard.rss_gib()})
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

        verdict = guard.check(config, model_spec)
        if verdict.estimate is not None:
            self.tracker.log_metrics(run_id, {"estimated_peak_gib": verdict.estimate.total,
                                              "memory_budget_gib": verdict.budget_gib})
        if not verdict.fits:
            trial.set_user_attr(REASON_ATTR, verdict.reason)
            self.tracker.set_tags(run_id, {STATE: "PRUNED", REASON: verdict.reason})
            self.tracker.end_run(run_id, "FINISHED")
            raise optuna.TrialPruned(verdict.reason)

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
            self.tracker.log_metrics(run_id, {"worker_rss_gib": guard.rss_gib()})
            self.tracker.set_tags(run_id, {STATE: "FAIL", REASON: reason})
            if details:
                self.tracker.log_json(run_id, {"reason": reason, "traceback": redact(details)}, "failure.json")
            self.tracker.end_run(run_id, "FAILED")
        except tracking_errors() as exc:
            log.warning("trial %d: failed (%s), and MLflow could not record it: %s", trial.number, reason,
                        _tracking_reason(exc))


class LiveMetrics:
    """What a trial logs while it trains: each step's train loss (``on_loss`` for `run_in_child`,
    batched every `LOSS_FLUSH_S` seconds), the validation reports and tags. A tracking store that
    is down keeps them pending (the trial goes on training); `steps` are the train-loss steps
    logged (not to log them again)."""

    def __init__(self, tracker: MlflowTracker, run_id: str) -> None:
        self.tracker, self.run_id = tracker, run_id
        self.pending: list[tuple[dict[str, float], int]] = []
        self.tags: dict[str, str] = {}
        self.steps: set[int] = set()
        self.flushed = time.monotonic()

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
