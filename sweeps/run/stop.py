"""How a worker, a fleet of them or ``pricer ui`` stops: SIGTERM takes the path Ctrl-C takes.

Process managers, ``timeout``, ``kill``, SLURM and Kubernetes stop a process with SIGTERM, whose
default action ends it on the spot: no ``finally``, so a trial was left RUNNING in Optuna and MLflow
and ``pricer ui``'s MLflow server went on without it. `sigterm_interrupts` turns the signal into
`Terminated`, a `KeyboardInterrupt`, so the code that already fails a trial cleanly on Ctrl-C (and
stops the UI's server) runs on SIGTERM too.
"""

from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; handled wherever Ctrl-C is (a trial fails with this reason)."""

    def __init__(self, message: str = "stopped by SIGTERM") -> None:
        super().__init__(message)


# the stop signals received so far, as the exception each raises (`raise_if_stopped` reads it)
_received: list[type[KeyboardInterrupt]] = []


def _on_sigterm(signum: int, frame: object) -> None:
    if _received and _received[0] is Terminated:
        # one stop is enough: a second SIGTERM during the clean-up (a fleet forwarding it, a
        # scheduler repeating it) must not break the clean-up itself
        return
    _received.append(Terminated)
    raise Terminated()


def _on_sigint(signum: int, frame: object) -> None:
    _received.append(KeyboardInterrupt)
    raise KeyboardInterrupt()


def sigterm_interrupts() -> None:
    """From now on SIGTERM raises `Terminated` in the main thread (once; later ones are ignored),
    and both it and Ctrl-C are remembered for `raise_if_stopped`."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
        # also when inherited as ignored (a process started by one whose SIGINT is ignored, as a
        # non-interactive shell does for `cmd &`): the commands say "Ctrl-C stops it"
        signal.signal(signal.SIGINT, _on_sigint)


def raise_if_stopped() -> None:
    """Raise the stop here if a signal came and its exception was lost. Python only prints an
    exception that a signal handler raises while a weakref callback or a ``__del__`` runs
    ("Exception ignored in ..."): a worker stopped at that moment went on training, and was
    killed later with its trial left RUNNING. The loops that wait (on a trial process, between
    trials, on the UI's server) call this every second or so."""
    if _received:
        raise _received[0]()
