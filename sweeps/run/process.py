"""The trial process: one fine-tune in a fresh process, its callbacks relayed over a Pipe.

Each fine-tune runs in a fresh process so its memory (model, optimizer, CUDA context) is
returned to the OS when it ends, and a crash (OOM kill, segfault) fails one trial instead of the
study (on a CPU-only Linux machine forked from a forkserver that imported torch, transformers
and peft once; elsewhere spawned: `trial_context`). The child's ``report(step, metrics)`` /
``should_stop()`` callbacks cross the Pipe, and so does each step's train loss, one way. The
child dies with its worker.
"""

from __future__ import annotations

import errno
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.errors import SpecError, TrialFailed
from pricer.phases import Phase
from sweeps.run import guard
from sweeps.run.budget import Requeue
from sweeps.run.stop import raise_if_stopped

if TYPE_CHECKING:
    from pricer.metrics import Metrics
    from pricer.train.config import TrainConfig
    from pricer.train.loop import Result

# How often the parent wakes to check that the child is still alive (and to let Ctrl-C in).
POLL_S = 1.0
# What a CPU trial process finds imported: ~12 s of CPU each trial paid again under ``spawn``;
# this module too (it holds `_child`, the process's target), so a trial runs the worker's code,
# not a file edited since the worker started.
PRELOAD = ("torch", "transformers.modeling_utils", "peft", "bitsandbytes", "pricer.train.loop", "sweeps.run.process")
# A trial process's name in ps/top/psutil (Linux: at most 15 bytes).
PROCESS_NAME = b"pricer-trial"
# memory a trial process holds back to report an error after reaching its cap
RESERVE_BYTES = 32 << 20
# ``forkserver`` or ``spawn``: how trial processes start (`trial_context`)
TRIAL_START_ENV = "PRICER_TRIAL_START"


def trial_context():
    """The multiprocessing context trial processes start from.

    On Linux with no NVIDIA device: a forkserver that has imported `PRELOAD` once per worker, so a
    trial starts in a second instead of re-importing torch, transformers and peft (about 7 CPU s
    a trial). Elsewhere, or with ``PRICER_TRIAL_START=spawn``: a fresh interpreter per trial.
    Never a forkserver on a GPU machine (a CUDA process can't be forked; bitsandbytes initialises
    CUDA at import) or macOS (it forbids forking what has loaded its frameworks). The forkserver's
    environment and working folder are the worker's when it started; `_child` applies the
    worker's current ones.
    """
    start = os.environ.get(TRIAL_START_ENV) or "forkserver"
    if start not in ("forkserver", "spawn"):
        raise SpecError(f"{TRIAL_START_ENV}={start!r}: use forkserver or spawn (or leave it unset)")
    if start == "spawn" or sys.platform != "linux" or _has_nvidia():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(list(PRELOAD))
    return ctx


def start_trial_server() -> None:
    """Start the forkserver now, if trials start from one: its imports (several CPU seconds) then
    run beside the worker's data build, study opening and baselines instead of holding up the
    first trial."""
    if trial_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


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

    # with a memory cap (`guard.cap_process`), freed before an error is reported: a trial that reached it
    # still has the room to send why (a forked trial starts with the forkserver's imports held)
    reserve = bytearray(RESERVE_BYTES) if os.environ.get(guard.BUDGET_ENV) else None
    try:
        from tqdm import tqdm

        # tqdm's default lock is a multiprocessing semaphore that the spawn resource tracker
        # reports as "leaked" when this process ends; the bars here need only a thread lock
        tqdm.set_lock(threading.RLock())
        guard.cap_process()
        from pricer.train.loop import train

        for name in PRELOAD:  # imported now, not inside the model load: what a start costs is its own phase
            importlib.import_module(name)
        started = _started()
        conn.send(("training",))  # what failed before this is the environment's fault, not the trial's
        result = train(config, data, out, spec=model_spec, report=report, should_stop=lambda: stop,
                       on_loss=lambda step, loss: conn.send(("loss", step, loss)),
                       checkpoint_dir=checkpoint_dir, resume_from=resume_from, progress=progress)
        result.phases.insert(0, started)
        import torch

        conn.send(("result", result, max(1, torch.cuda.device_count())))
    except BaseException as exc:  # noqa: B036 -- the reason must reach the parent, whatever it is
        capped = reserve is not None
        del reserve
        full = _disk_full(checkpoint_dir or out)
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        # under a cap, every allocation error names it (a load's MemoryError already does)
        if capped and guard.out_of_memory(exc) and guard.BUDGET_ENV not in reason:
            reason = (f"MemoryError: the trial reached its {guard.BUDGET_ENV} cap of {guard.budget_gib():g} GiB; "
                      f"raise it or lower batch_size ({reason})")
        conn.send(("error", reason, traceback.format_exc(), full))
        raise SystemExit(1) from None
    finally:
        conn.close()


def _started() -> Phase:
    """This trial process's start, from its creation to its first step of work: the imports of
    torch, transformers and peft under ``spawn``, a fork under the forkserver."""
    import psutil

    from pricer.phases import cpu_seconds

    return Phase("trial process start", time.time() - psutil.Process().create_time(), cpu_seconds(children=False))


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


def _failed(reason: str, charged: bool) -> TrialFailed:
    """A trial process's failure: charged to the study's budget once it trains (`sweeps.run.budget`)."""
    return TrialFailed(reason) if charged else Requeue(reason)


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
