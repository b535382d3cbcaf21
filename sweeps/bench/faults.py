"""`pricer bench faults`: a real study survives each fault a long sweep meets, measured.

One PostgreSQL study storage and one MLflow server (``mlflow server`` on a free loopback port, its
runs in a second PostgreSQL database, its artifacts in a folder) serve every fault; each fault gets
its own study: a fleet of W workers (`pricer launch --workers W`, a real process tree) runs T toy
trials, and once trials are training the fault is injected:

- ``mlflow-restart``: the MLflow server is killed (SIGKILL, its process group) and started again
  `outage_s` later on the same port;
- ``postgres-severed``: every connection to the study's database is terminated
  (``pg_terminate_backend``, three times a second apart). The server is shared with other users,
  so it is not restarted: to a client a restart looks the same, its connections dropped;
- ``worker-sigkill``: a worker training a checkpointed trial is killed with its trial process;
- ``disk-full``: the trial processes may write no file past 64 KiB (``RLIMIT_FSIZE``) for a
  while: their checkpoint and adapter writes fail as on a full disk;
- ``checkpoint-corrupt``: a worker training a checkpointed trial is killed and the checkpoint
  its retry resumes from is truncated to half;
- ``second-ctrl-c``: the fleet gets Ctrl-C (SIGINT), then two more during its shutdown; the
  fleet is launched again to finish the study.

Then, per fault: did every trial of the total finish exactly once (in Optuna and one FINISHED run
each in MLflow), is anything left RUNNING (Optuna trials, MLflow runs), how many trials of the
total were lost, and is any file half-written (a partial checkpoint left in the study's folder,
an artifact of a finished run that does not read back whole).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from pricer.errors import SpecError
from sweeps.bench.soak import HEARTBEATS, STUDY, admin, bench_databases
from sweeps.run.process import PROCESS_NAME
from sweeps.track.redact import redact

FAULTS = ("mlflow-restart", "postgres-severed", "worker-sigkill", "disk-full", "checkpoint-corrupt", "second-ctrl-c")
# a killed worker's trial is failed and retried within seconds, not minutes
ENV = {**HEARTBEATS, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
FSIZE_LIMIT = 64 * 1024


@dataclass
class FaultResult:
    fault: str
    injected: str             # what was done, in words
    finished: int             # trials COMPLETE or PRUNED, each counted once
    finished_once: bool       # exactly the total, each with one FINISHED MLflow run
    running: int              # Optuna trials and MLflow runs left RUNNING
    lost: int                 # trials of the total that did not finish
    requeued: int             # failed tries re-queued, not charged
    half_written: list[str]   # files left partial or unreadable
    wall_s: float

    @property
    def survived(self) -> bool:
        return self.finished_once and not self.running and not self.lost and not self.half_written

    def to_dict(self) -> dict:
        return {**asdict(self), "survived": self.survived}


def run_faults(server: str, sample: str, out: Path, *, faults: tuple[str, ...] = FAULTS, workers: int = 2,
               trials: int = 6, steps: int = 6, outage_s: float = 30.0,
               on_result: Callable[[FaultResult], None] | None = None) -> list[FaultResult]:
    """Run the fault matrix; `server` is a PostgreSQL URL whose user may create databases.

    Raises:
        SpecError: no PostgreSQL there, or an unknown fault.
    """
    if not server.startswith("postgresql"):
        raise SpecError(f"--storage {redact(server)}: the fault bench needs a PostgreSQL server (it creates two "
                        "databases)")
    if unknown := [f for f in faults if f not in FAULTS]:
        raise SpecError(f"--faults {','.join(unknown)}: unknown; choose from {','.join(FAULTS)}")
    tag = uuid.uuid4().hex[:8]
    with bench_databases(server, f"pricer_faults_{tag}", "bench") as (names, urls):
        out.mkdir(parents=True, exist_ok=True)
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # the checks download every run's artifacts
        bench = Bench(server, urls["storage"], urls["tracking"], names["storage"], sample,
                      out / f"faults-{tag}", workers=workers, trials=trials, steps=steps, outage_s=outage_s)
        results = []
        try:
            bench.start_mlflow()
            for fault in faults:
                result = bench.run(fault)
                results.append(result)
                if on_result is not None:
                    on_result(result)
        finally:
            bench.stop_mlflow()
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bench:
    """The stores every fault shares, and one fault's study at a time."""

    def __init__(self, server: str, storage: str, backend: str, storage_db: str, sample: str, root: Path, *,
                 workers: int, trials: int, steps: int, outage_s: float) -> None:
        self.server, self.storage, self.backend, self.storage_db = server, storage, backend, storage_db
        self.sample, self.root = sample, root
        self.workers, self.trials, self.steps, self.outage_s = workers, trials, steps, outage_s
        self.port = _free_port()
        self.tracking = f"http://127.0.0.1:{self.port}"
        self.mlflow: subprocess.Popen | None = None

    # -- the MLflow server ------------------------------------------------------------------

    def start_mlflow(self) -> None:
        from sweeps.results import ui

        self.root.mkdir(parents=True, exist_ok=True)
        self.mlflow = ui.start(self.backend, port=self.port, artifacts=self.root / "artifacts",
                               log=self.root / "mlflow-server.log")
        ui.wait_ready(self.mlflow, self.tracking, timeout=300)

    def stop_mlflow(self, *, kill: bool = False) -> None:
        from sweeps.results import ui

        if self.mlflow is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.mlflow.pid, signal.SIGKILL)
            self.mlflow.wait()
        else:
            ui.stop(self.mlflow)
        self.mlflow = None

    # -- one fault --------------------------------------------------------------------------

    def run(self, fault: str) -> FaultResult:
        name = f"faults-{fault}"
        workdir = self.root / fault
        workdir.mkdir(parents=True, exist_ok=True)
        study = workdir / f"{name}.yaml"
        study.write_text(STUDY.format(name=name, workdir=workdir / "runs", sample=self.sample, steps=self.steps,
                                      trials=self.trials))
        started = time.monotonic()
        fleet = self._launch(study, workdir / "fleet.log")
        try:
            injected = getattr(self, "_" + fault.replace("-", "_"))(fleet, name, workdir / "runs")
            if fleet.wait(timeout=3600) != 0 and fault == "second-ctrl-c":
                fleet = self._launch(study, workdir / "fleet-again.log")  # the study goes on where it stopped
                fleet.wait(timeout=3600)
        finally:
            if fleet.poll() is None:
                _kill_tree(fleet)
        return self._check(fault, name, workdir / "runs", injected, time.monotonic() - started)

    def _launch(self, study: Path, log: Path) -> subprocess.Popen:
        env = {**os.environ, **ENV, "PRICER_STORAGE": self.storage, "PRICER_TRACKING_URI": self.tracking}
        with log.open("ab") as output:
            return subprocess.Popen([sys.executable, "-m", "sweeps.cli", "launch", str(study), "--workers",
                                     str(self.workers)], env=env, stdout=output, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def _training(self, fleet: subprocess.Popen, name: str, workdir: Path, *, checkpointed: bool = True,
                  timeout_s: float = 1800) -> int:
        """Wait until a trial is training (with a checkpoint saved, if asked); its number."""
        import optuna
        from optuna.trial import TrialState

        storage = optuna.storages.RDBStorage(self.storage)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if fleet.poll() is not None:
                    raise SpecError(f"fault bench: the fleet of {name} ended before a trial trained; see its log")
                time.sleep(0.5)
                try:
                    running = optuna.load_study(study_name=name, storage=storage).get_trials(
                        deepcopy=False, states=(TrialState.RUNNING,))
                except KeyError:
                    continue
                for trial in running:
                    folder = workdir.resolve() / "trials" / f"{trial.number:05d}" / "checkpoint"
                    if not checkpointed or (folder / "checkpoint.pt").is_file():
                        return trial.number
        finally:
            storage.engine.dispose()
        raise SpecError(f"fault bench: no trial of {name} trained within {timeout_s:.0f} s")

    def _worker_of(self, name: str, number: int) -> int:
        """The pid of the worker that runs trial `number` (its MLflow run's worker tag)."""
        import optuna

        from sweeps.run.objective import RUN_ID_ATTR
        from sweeps.track.tracking import WORKER, MlflowTracker

        trial = optuna.load_study(study_name=name, storage=self.storage).trials[number]
        tracker = MlflowTracker(self.tracking, name, create=False)
        return int(tracker.client.get_run(trial.user_attrs[RUN_ID_ATTR]).data.tags[WORKER].rsplit(":", 1)[1])

    def _mlflow_restart(self, fleet, name: str, workdir: Path) -> str:
        self._training(fleet, name, workdir, checkpointed=False)
        self.stop_mlflow(kill=True)
        time.sleep(self.outage_s)
        self.start_mlflow()
        return f"MLflow server killed (SIGKILL) mid-trial, started again after {self.outage_s:.0f} s"

    def _postgres_severed(self, fleet, name: str, workdir: Path) -> str:
        self._training(fleet, name, workdir, checkpointed=False)
        severed = 0
        for _ in range(3):
            with admin(self.server) as conn:
                severed += len(conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()", (self.storage_db,)).fetchall())
            time.sleep(1)
        return (f"{severed} connections to the study's PostgreSQL database terminated (pg_terminate_backend, 3 "
                "times; the shared server itself is not restarted)")

    def _worker_sigkill(self, fleet, name: str, workdir: Path) -> str:
        number = self._training(fleet, name, workdir)
        worker = self._worker_of(name, number)
        os.killpg(worker, signal.SIGKILL)
        return f"worker {worker} killed (SIGKILL, with its trial process) while training trial {number}"

    def _disk_full(self, fleet, name: str, workdir: Path) -> str:
        self._training(fleet, name, workdir, checkpointed=False)
        limited: set[int] = set()
        end = time.monotonic() + max(10.0, self.outage_s / 2)
        while time.monotonic() < end:
            for proc in psutil.Process(fleet.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if proc.pid not in limited and proc.name() == PROCESS_NAME.decode():
                        proc.rlimit(psutil.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))
                        limited.add(proc.pid)
            time.sleep(0.3)
        return (f"{len(limited)} trial processes limited to files of {FSIZE_LIMIT // 1024} KiB (RLIMIT_FSIZE) "
                f"for {max(10.0, self.outage_s / 2):.0f} s")

    def _checkpoint_corrupt(self, fleet, name: str, workdir: Path) -> str:
        number = self._training(fleet, name, workdir)
        folder = workdir.resolve() / "trials" / f"{number:05d}"
        os.killpg(self._worker_of(name, number), signal.SIGKILL)
        checkpoint = folder / "checkpoint" / "checkpoint.pt"
        whole = checkpoint.read_bytes()
        checkpoint.write_bytes(whole[: len(whole) // 2])
        return f"trial {number}'s worker killed and its checkpoint truncated to {len(whole) // 2:,} of {len(whole):,} bytes"

    def _second_ctrl_c(self, fleet, name: str, workdir: Path) -> str:
        self._training(fleet, name, workdir, checkpointed=False)
        tree = psutil.Process(fleet.pid).children(recursive=True)
        fleet.send_signal(signal.SIGINT)
        for _ in range(2):
            time.sleep(0.5)
            with contextlib.suppress(ProcessLookupError):
                fleet.send_signal(signal.SIGINT)
        fleet.wait(timeout=600)
        _, alive = psutil.wait_procs(tree, timeout=30)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        return (f"Ctrl-C (SIGINT) to the fleet, then 2 more during its shutdown; {len(alive)} process(es) "
                "outlived it; launched again to finish")

    # -- the verdict ------------------------------------------------------------------------

    def _check(self, fault: str, name: str, workdir: Path, injected: str, wall: float) -> FaultResult:
        import optuna
        from optuna.trial import TrialState

        from sweeps.run.budget import REQUEUED
        from sweeps.run.launch import counted
        from sweeps.run.studies import close_storage
        from sweeps.track.tracking import TRIAL, MlflowTracker

        study = optuna.load_study(study_name=name, storage=self.storage)
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        tracker = MlflowTracker(self.tracking, name, create=False)
        runs = tracker.client.search_runs([tracker.experiment_id], max_results=5000)
        finished_runs = [r for r in runs if r.data.tags.get("pricer.role") == "trial"
                         and r.data.tags.get("pricer.state") in ("COMPLETE", "PRUNED")]
        once = (len(finished) == self.trials == counted(study)
                and sorted(r.data.tags[TRIAL] for r in finished_runs) == sorted(str(t.number) for t in finished)
                and all(r.info.status == "FINISHED" for r in finished_runs))
        running = (sum(t.state == TrialState.RUNNING for t in trials)
                   + sum(r.info.status == "RUNNING" for r in runs))
        close_storage(study)
        return FaultResult(fault=fault, injected=injected, finished=len(finished), finished_once=once,
                           running=running, lost=max(0, self.trials - len(finished)),
                           requeued=sum(bool(t.system_attrs.get(REQUEUED)) for t in trials),
                           half_written=_half_written(workdir, tracker, finished_runs), wall_s=round(wall, 1))


def _kill_tree(proc: subprocess.Popen) -> None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def _half_written(workdir: Path, tracker, finished_runs: list) -> list[str]:
    """Partial files left in the study's folder, and artifacts of finished runs that don't read
    back whole (each run's result JSON, predictions and adapter weights)."""
    import tempfile

    from mlflow.artifacts import download_artifacts
    from safetensors import safe_open

    bad = [str(p) for p in workdir.rglob("*") if p.is_file() and (".partial-" in p.name or p.suffix == ".tmp")]
    for run in finished_runs:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = Path(download_artifacts(run_id=run.info.run_id, tracking_uri=tracker.tracking_uri,
                                                dst_path=tmp))
                for name in ("result.json", "predictions.json"):
                    json.loads((local / name).read_text())
                weights = list((local / "adapter").rglob("*.safetensors"))
                if not weights:
                    raise FileNotFoundError("adapter/*.safetensors")
                for path in weights:
                    with safe_open(str(path), framework="pt") as handle:
                        for key in handle.keys():
                            handle.get_tensor(key)
            except Exception as exc:  # noqa: BLE001 -- whatever does not read back is the finding
                bad.append(f"run {run.info.run_id}: {type(exc).__name__}: {str(exc)[:200]}")
    return bad
