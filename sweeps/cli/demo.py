"""What `pricer demo` adds around launch, leaderboard and export: library chatter routed to a log
file, one line per finished trial, and where the seconds went (`pricer.phases`) as a table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.phases import Phase, Phases

if TYPE_CHECKING:
    import optuna

LOG_NAME, PHASES_NAME = "demo.log", "demo-phases.json"


@contextmanager
def chatter_to(log_file: Path | None) -> Iterator[None]:
    """Send this process's standard error, and that of every process it starts meanwhile, to
    `log_file` (appended); None leaves it on the terminal.

    Libraries talk on standard error in many ways: MLflow's and Optuna's own log handlers,
    Python's warnings, tqdm bars (``datasets``' "Saving the dataset"), bitsandbytes' logger in a
    trial process, C code. Moving the file descriptor catches them all; what the user should see
    (a line per trial, the tables) goes to standard output. The descriptor is restored on the way
    out, so an error line or a traceback reaches the terminal.
    """
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    with log_file.open("ab") as handle:
        os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def trial_line(trial: optuna.trial.FrozenTrial, total: int | None) -> str:
    """One finished trial as the demo shows it: number, model, what it reached, how long."""
    from optuna.trial import TrialState

    p = trial.params
    seconds = trial.duration.total_seconds() if trial.duration else 0.0
    what = {TrialState.COMPLETE: f"validation $ error {trial.value:,.2f}" if trial.value is not None else "complete",
            TrialState.PRUNED: "pruned" + (f" ({trial.user_attrs['fail_reason']})"
                                           if "fail_reason" in trial.user_attrs else ""),
            TrialState.FAIL: f"failed: {trial.user_attrs.get('fail_reason', 'see the log')}"}.get(
                trial.state, trial.state.name.lower())
    of = f"/{total}" if total else ""
    config = ", ".join(f"{k} {p[k]:g}" if isinstance(p[k], float) else f"{k} {p[k]}"
                       for k in ("lora_r", "learning_rate", "batch_size", "max_steps") if k in p)
    return f"trial {trial.number + 1}{of}  {p.get('model', '?')}  ({config}): {what}  [{seconds:.0f} s]"


def started() -> Phase:
    """This process, from its creation to now: the interpreter and the imports."""
    import psutil

    from pricer.phases import cpu_seconds

    return Phase("pricer start (imports)", time.time() - psutil.Process().create_time(),
                 cpu_seconds(children=False))


def finish(phases: Phases) -> tuple[list[tuple[str, int, float, float]], float, float]:
    """The phase totals with two more rows: the trial forkserver's own CPU (its imports, once per
    worker) if one ran, and what no phase covers. Returns (rows, wall s, CPU s of the process tree).

    The tree's CPU is this process's, its waited-for children's (a spawned trial, a data build's
    workers) and the forkserver's with its children (forked trials are its to wait for).
    """
    from pricer.phases import cpu_seconds

    tree = cpu_seconds(children=True)
    server = _forkserver_cpu()
    if server is not None:
        own, reaped = server
        phases.add([Phase("trial forkserver (imports, once)", 0.0, own)])
        tree += own + reaped
    wall = time.time() - _created()
    rows = phases.totals()
    rows.append(("other (not in a phase)", 1, max(0.0, wall - sum(r[2] for r in rows if not _in_trial(r[0]))),
                 max(0.0, tree - sum(r[3] for r in rows))))
    return rows, wall, tree


# measured inside the trial process, so their wall time overlaps "worker while its trial runs"
TRIAL_PHASES = ("trial process start", "load model", "train steps", "validation", "test", "checkpoint",
                "save adapter")


def _in_trial(name: str) -> bool:
    return name in TRIAL_PHASES


def print_phases(rows: list[tuple[str, int, float, float]], wall: float, cpu: float, out: Path,
                 start_method: str) -> None:
    """The phase table on standard output, and the same numbers in `out` (JSON)."""
    from sweeps.cli.output import print_table

    table = [(("  " if _in_trial(name) else "") + name, str(n), f"{w:,.1f}", f"{c:,.1f}",
              f"{100 * c / cpu:.0f}" if cpu else "") for name, n, w, c in rows]
    table.append(("total", "", f"{wall:,.1f}", f"{cpu:,.1f}", "100"))
    console = print_table(f"where the demo's seconds went (trial processes: {start_method})",
                          ("phase", "times", "wall s", "CPU s", "CPU %"), table, styles={len(table) - 1: "bold"})
    console.print("indented rows ran inside the trial processes (their wall time is within "
                  "\"worker while its trial runs\"); CPU s is user + system of every process")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "start_method": start_method, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "phases": [{"phase": name, "times": n, "wall_s": round(w, 2), "cpu_s": round(c, 2), "in_trial": _in_trial(name)}
                   for name, n, w, c in rows]}, indent=2) + "\n")


def _created() -> float:
    import psutil

    return psutil.Process().create_time()


def _forkserver_cpu() -> tuple[float, float] | None:
    """(the forkserver's own CPU s, its reaped children's) if this process started one."""
    from multiprocessing import forkserver

    import psutil

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if not pid:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system, t.children_user + t.children_system
