"""How a worker, a fleet of them or ``pricer ui`` stops: SIGTERM and SIGHUP take the path Ctrl-C takes.

Process managers, ``timeout``, ``kill``, SLURM and Kubernetes stop a process with SIGTERM, and a
closing SSH session sends SIGHUP; the default action of both ends the process on the spot: no
``finally``, so a trial was left RUNNING in Optuna and MLflow and ``pricer ui``'s MLflow server
went on without it. `sigterm_interrupts` turns them into `Terminated`, a `KeyboardInterrupt`, so
the code that already fails a trial cleanly on Ctrl-C (and stops the UI's server) runs on them too.

One stop is enough: once one is under way, later signals (a second Ctrl-C, a scheduler
repeating SIGTERM, a fleet forwarding it) are ignored. A second Ctrl-C used to interrupt the
clean-up itself: the pass that SIGKILLs a fleet's stragglers was cut short (orphans), or a trial's
MLflow run was never ended (left RUNNING).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; handled wherever Ctrl-C is (a trial fails with this reason)."""

    def __init__(self, message: str = "stopped by SIGTERM") -> None:
        super().__init__(message)


# the first stop signal received, as the exception it raised (`raise_if_stopped` reads it)
_received: list[KeyboardInterrupt] = []


def _importing(frame: FrameType | None) -> bool:
    """Whether `frame` runs inside an import (importlib's frames are on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _received:
        return  # a stop is under way: let its clean-up finish
    name = signal.Signals(signum).name
    stop = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(f"stopped by {name}")
    _received.append(stop)
    if _importing(frame):
        # raised through a native module's initialisation (torch's, while a worker's memory guard
        # imported it), the exception aborted the process ("terminate called after throwing
        # pybind11::error_already_set") and left its trial RUNNING; the waiting loops'
        # `raise_if_stopped` raises it once the import is done
        return
    raise stop


def sigterm_interrupts() -> None:
    """From now on SIGTERM and SIGHUP raise `Terminated` and Ctrl-C `KeyboardInterrupt` in the
    main thread, the first of them only; it is remembered for `raise_if_stopped`."""
    if threading.current_thread() is threading.main_thread():
        # SIGINT also when inherited as ignored (a process started by one whose SIGINT is ignored,
        # as a non-interactive shell does for `cmd &`): the commands say "Ctrl-C stops it"
        for signum in (signal.SIGTERM, signal.SIGINT, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])):
            signal.signal(signum, _on_signal)


def stopping() -> bool:
    """Whether a stop signal has arrived."""
    return bool(_received)


def raise_if_stopped() -> None:
    """Raise the stop here if a signal came and its exception was lost. Python only prints an
    exception that a signal handler raises while a weakref callback or a ``__del__`` runs
    ("Exception ignored in ..."): a worker stopped at that moment went on training, and was
    killed later with its trial left RUNNING. A stop that comes during an import is held back
    until then (`_on_signal`). The loops that wait (on a trial process, between
    trials, on the UI's server) call this every second or so."""
    if _received:
        stop = _received[0]
        raise type(stop)(*stop.args)


def stop_with_parent() -> None:
    """``preexec_fn`` for a child process (a fleet's worker, the UI's MLflow server): on Linux it
    gets SIGTERM when the process that started it dies, even by ``kill -9``, and stops cleanly
    instead of running on as an orphan nobody stops. Elsewhere nothing (no such signal)."""
    if sys.platform == "linux":
        import ctypes

        PR_SET_PDEATHSIG = 1  # noqa: N806 -- <sys/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
