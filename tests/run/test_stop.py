"""How a process stops: a stop signal whose exception Python dropped is not lost."""

from __future__ import annotations

import subprocess
import sys

DROPPED = """
import os, signal, sys
from sweeps.run.stop import Terminated, raise_if_stopped, sigterm_interrupts

sigterm_interrupts()


class Dropper:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in here, where Python drops its exception


Dropper()
print("went on", flush=True)
try:
    raise_if_stopped()
except Terminated as exc:
    print(f"stopped: {exc}", flush=True)
    sys.exit(0)
sys.exit(1)
"""


def test_a_sigterm_whose_exception_python_dropped_is_raised_at_the_next_check() -> None:
    """A worker stopped while a weakref callback or __del__ ran went on training and was killed
    later with its trial left RUNNING (seen in the fleet's SIGTERM test)."""
    done = subprocess.run([sys.executable, "-c", DROPPED], capture_output=True, text=True, timeout=120)
    assert "Exception ignored" in done.stderr, done.stderr  # Python did drop it
    assert done.stdout.splitlines() == ["went on", "stopped: stopped by SIGTERM"], (done.stdout, done.stderr)
    assert done.returncode == 0


INHERITED_IGNORE = """
import os, signal, sys
assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # as its parent left it
from sweeps.run.stop import sigterm_interrupts

sigterm_interrupts()
try:
    os.kill(os.getpid(), signal.SIGINT)
    signal.sigtimedwait([], 0.5) if hasattr(signal, "sigtimedwait") else None
except KeyboardInterrupt:
    print("stopped", flush=True)
"""


def test_ctrl_c_stops_a_command_started_with_sigint_ignored() -> None:
    """A process inherits an ignored SIGINT from its parent (the full suite's pytest had one, and
    `pricer ui`'s Ctrl-C test hung there); the commands say "Ctrl-C stops it", so it does."""
    wrapper = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
               "os.execv(sys.executable, [sys.executable, '-c', sys.argv[1]])")
    done = subprocess.run([sys.executable, "-c", wrapper, INHERITED_IGNORE], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "stopped", (done.stdout, done.stderr)


SECOND_CTRL_C = """
import os, signal, time
from sweeps.run.stop import sigterm_interrupts

sigterm_interrupts()
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
except KeyboardInterrupt:
    # the clean-up (a fleet's SIGKILL pass, ending a trial's run): a second Ctrl-C lands in it
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    print("clean-up finished", flush=True)
"""


def test_a_second_ctrl_c_during_the_clean_up_does_not_interrupt_it() -> None:
    """A second Ctrl-C cut a fleet's SIGKILL pass short (orphans) or left a trial's run RUNNING."""
    done = subprocess.run([sys.executable, "-c", SECOND_CTRL_C], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "clean-up finished", (done.stdout, done.stderr)
    assert done.returncode == 0


SIGHUP = """
import os, signal, time
from sweeps.run.stop import Terminated, sigterm_interrupts

sigterm_interrupts()
try:
    os.kill(os.getpid(), signal.SIGHUP)
    time.sleep(5)
except Terminated as exc:
    print(f"clean stop: {exc}", flush=True)
"""


def test_sighup_from_a_closed_ssh_session_stops_as_sigterm_does() -> None:
    done = subprocess.run([sys.executable, "-c", SIGHUP], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "clean stop: stopped by SIGHUP", (done.stdout, done.stderr)


STOPPED_IN_AN_IMPORT = """
import os, signal, sys
from pathlib import Path
from sweeps.run.stop import Terminated, raise_if_stopped, sigterm_interrupts

sigterm_interrupts()
sys.path.insert(0, sys.argv[1])
Path(sys.argv[1], "slow_native.py").write_text(
    "import os, signal\\n"
    "os.kill(os.getpid(), signal.SIGTERM)\\n"
    "LOADED = True\\n")
import slow_native

print(f"imported: {slow_native.LOADED}", flush=True)
try:
    raise_if_stopped()
except Terminated as exc:
    print(f"stopped: {exc}", flush=True)
"""


def test_a_stop_during_an_import_is_raised_once_the_import_is_done(tmp_path) -> None:
    """Raised inside torch's import (a worker's memory guard imports it), the stop unwound through
    native code and aborted the worker: its trial was left RUNNING (seen in the fleet's kill test)."""
    done = subprocess.run([sys.executable, "-c", STOPPED_IN_AN_IMPORT, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.splitlines() == ["imported: True", "stopped: stopped by SIGTERM"], (done.stdout, done.stderr)
