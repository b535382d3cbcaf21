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


def _on_sigterm(signum: int, frame: object) -> None:
    # one stop is enough: a second SIGTERM during the clean-up (a fleet forwarding it, a
    # scheduler repeating it) must not break the clean-up itself
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


def sigterm_interrupts() -> None:
    """From now on SIGTERM raises `Terminated` in the main thread (once; later ones are ignored)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
