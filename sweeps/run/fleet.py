"""`pricer launch STUDY --workers N [--gpus 0,1]`: N workers of one study on this machine.

Each worker is a plain ``pricer launch STUDY`` process (the loop in `sweeps.run.launch`), so a
fleet here behaves as workers started by hand, by a SLURM array or by a Kubernetes Job do: they
share the study's storage and its total (``--n-trials``). What the fleet adds:

- **one device each**: worker i sees only ``gpus[i % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``),
  the ``--gpus`` given or, by default, every GPU this process sees (`visible_gpus`); an id that
  is not among them is refused (CUDA would have hidden every device, and the worker trained on
  the CPU without a word);
- **a share of the cores each**: torch (OpenMP, MKL) and the tokenizers (Rayon) take every core
  by default, so two workers on 2 cores ran steps 5-6x slower instead of 2x; each worker (and
  its trial processes, which inherit the environment) gets ``cores // N`` threads, at least 1;
- **secrets off the command line**: the storage and tracking URLs reach the workers in
  ``PRICER_STORAGE`` / ``PRICER_TRACKING_URI``, never in their argv (``ps`` shows argv to all);
- **one stop for all**: Ctrl-C or SIGTERM sends each worker SIGTERM (`sweeps.run.stop`), which
  fails its running trial with the reason and ends its MLflow run as FAILED; a worker still
  running after `STOP_GRACE_S` is killed with its trial process; a worker whose fleet dies
  (``kill -9``, a lost terminal) gets SIGTERM from the kernel (Linux's parent-death signal).

SQLite takes one writer at a time: N > 1 workers on a ``sqlite:///`` storage, or a ``sqlite:///``
MLflow store, is refused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pricer.errors import SpecError
from pricer.machine import THREAD_ENVS, usable_cores
from sweeps.run.stop import stop_with_parent
from sweeps.run.studies import WORKER_ENV
from sweeps.spec.study import STORAGE_ENV, TRACKING_ENV, StudySpec
from sweeps.spec.urls import is_sqlite, sqlite_path
from sweeps.track.redact import redact

# how long stopped workers get to fail their trials and end their runs before they are killed
STOP_GRACE_S = 60.0
POLL_S = 0.5


def visible_gpus() -> list[str]:
    """The GPUs this process may hand to its workers: the entries of ``CUDA_VISIBLE_DEVICES``
    when it is set, else one id per NVIDIA device the driver lists; none without a driver."""
    present = _nvidia_devices()
    if not present:
        return []
    if (env := os.environ.get("CUDA_VISIBLE_DEVICES")) is not None:
        return [g.strip() for g in env.split(",") if g.strip()]
    return [str(i) for i in range(present)]


def _nvidia_devices() -> int:
    listed = Path("/proc/driver/nvidia/gpus")
    if listed.is_dir():
        return sum(1 for _ in listed.iterdir())
    try:  # no /proc (or a driver that lists nothing there): ask the driver's tool
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def parse_gpus(text: str | None, visible: list[str]) -> list[str]:
    """``"0,1"`` -> ``["0", "1"]``, each one of `visible`; None -> all of `visible`.

    Raises:
        SpecError: an empty entry, or an id that is not a visible GPU.
    """
    if text is None:
        return list(visible)
    gpus = [g.strip() for g in text.split(",")]
    if not all(gpus):
        raise SpecError(f"--gpus {text!r}: a comma-separated list of device ids, e.g. --gpus 0,1")
    if not visible:
        raise SpecError(f"--gpus {text}: no GPU is visible here (no NVIDIA driver, or CUDA_VISIBLE_DEVICES is "
                        "empty); leave --gpus out to train on the CPU")
    if wrong := [g for g in gpus if g not in visible]:
        raise SpecError(f"--gpus {text}: no GPU {', '.join(wrong)} here; the visible ones are "
                        f"{','.join(visible)} (nvidia-smi -L lists them)")
    return gpus


@dataclass(frozen=True)
class WorkerSlot:
    """One worker: its number, the device it sees, its threads, and the environment that says so."""

    index: int
    gpu: str | None
    threads: int
    env: dict[str, str] = field(repr=False)


def fleet_slots(spec: StudySpec, workers: int | None, gpus: list[str], *, n_cores: int | None = None) -> list[WorkerSlot]:
    """The workers to start: `workers` of them (default: one per GPU).

    Raises:
        SpecError: no worker, or several on one SQLite storage.
    """
    n = workers if workers is not None else len(gpus)
    if n < 1:
        raise SpecError(f"--workers {n}: at least 1 (or give --gpus, one worker per GPU)")
    if n > 1 and is_sqlite(spec.storage):
        raise SpecError(f"storage {redact(spec.storage)}: {n} workers can't share a SQLite file (one writer at a "
                        "time: they would fail on 'database is locked'); use PostgreSQL, e.g. PRICER_STORAGE="
                        "postgresql://USER@HOST:5432/DB (or --storage), or --workers 1")
    if n > 1 and sqlite_path(spec.tracking_uri) is not None:
        raise SpecError(f"tracking_uri {redact(spec.tracking_uri)}: {n} workers can't share a SQLite MLflow store "
                        "(one writer at a time); use a PostgreSQL database, e.g. PRICER_TRACKING_URI="
                        "postgresql://USER@HOST:5432/MLFLOW_DB (or --tracking-uri), an MLflow server "
                        "(http://HOST:5000), or --workers 1")
    threads = max(1, (n_cores or usable_cores()) // n)
    slots = []
    for i in range(n):
        gpu = gpus[i % len(gpus)] if gpus else None
        env = {STORAGE_ENV: spec.storage, TRACKING_ENV: spec.tracking_uri, WORKER_ENV: str(i),
               **{name: str(threads) for name in THREAD_ENVS}, "TOKENIZERS_PARALLELISM": "false"}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        slots.append(WorkerSlot(i, gpu, threads, env))
    return slots


def worker_command(study: Path, n_trials: int | None) -> list[str]:
    """A worker's argv: no URL in it (they travel in the environment)."""
    cmd = [sys.executable, "-m", "sweeps.cli", "launch", str(study)]
    return cmd + (["--n-trials", str(n_trials)] if n_trials is not None else [])


def start_worker(slot: WorkerSlot, study: Path, n_trials: int | None, log: Path) -> subprocess.Popen:
    """Start one worker in its own session (its own process group, which `stop` can kill whole;
    a terminal's Ctrl-C reaches the fleet alone, which stops the workers one by one)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        return subprocess.Popen(worker_command(study, n_trials), env={**os.environ, **slot.env},
                                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=stop_with_parent)


def stop(procs: list[subprocess.Popen], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to every live worker, then SIGKILL to the process group of any still running after
    `grace_s` (its trial process included)."""
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker's group: it and its trial process
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()


@dataclass
class Fleet:
    """Started workers: their slots, processes and log files. Used as a context manager, a stop
    (or an error) anywhere inside it stops the workers too: one that arrived between their start
    and `wait` left them running on their own."""

    slots: list[WorkerSlot]
    procs: list[subprocess.Popen]
    logs: list[Path]

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if error is not None:
            stop(self.procs)

    def wait(self) -> list[int]:
        """Wait for every worker; on Ctrl-C or SIGTERM stop them all (then re-raise).

        Returns:
            The workers' exit codes, in order.
        """
        try:
            while any(p.poll() is None for p in self.procs):
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            stop(self.procs)
            raise
        return [p.returncode for p in self.procs]


def start_fleet(spec: StudySpec, study: Path, slots: list[WorkerSlot], *, n_trials: int | None,
                log_dir: Path | None = None) -> Fleet:
    """Start the planned workers of `study` (the file; each worker reads it), logs in
    ``<workdir>/workers/worker-<i>.log`` unless `log_dir` says otherwise."""
    log_dir = Path(log_dir or Path(spec.workdir) / "workers")
    procs, logs = [], []
    try:
        for slot in slots:
            log = log_dir / f"worker-{slot.index}.log"
            procs.append(start_worker(slot, study, n_trials, log))
            logs.append(log)
    except KeyboardInterrupt:
        stop(procs)
        raise
    return Fleet(slots, procs, logs)
