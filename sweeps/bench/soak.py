"""`pricer bench fleet --workers N --trials T`: a soak of the fleet on this machine.

N workers (`sweeps.run.fleet`) run T short real trials (a toy model, a few steps, a checkpoint
every step) on one study in a fresh PostgreSQL database, with their MLflow runs in another. Once
two trials have checkpointed, the workers running them are killed with SIGKILL, trial process
and all, as a lost machine would be. The live workers fail the dead trials when their heartbeats
go stale and run the retries, which resume from the dead tries' checkpoints. The soak then checks
what a user relies on and prints it: every trial finished exactly once, none left RUNNING in
Optuna or MLflow, the killed trials retried and resumed, the parent run ended once (after the
last trial), and the storage's load (committed transactions per second, from
``pg_stat_database``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pricer.errors import SpecError
from sweeps.run.fleet import fleet_slots, start_fleet, stop
from sweeps.run.objective import RESUMED, RUN_ID_ATTR
from sweeps.run.studies import SURPLUS
from sweeps.spec.study import load_study
from sweeps.track.redact import redact
from sweeps.track.tracking import WORKER, MlflowTracker

STUDY = """\
# Written by `pricer bench fleet` or `pricer bench faults`: short real trials (toy model, few
# steps, a checkpoint each step).
name: {name}
workdir: {workdir}
data: {{source: {sample}, limit: 300}}
search_space:
  model: {{choices: [toy-llama-3.1]}}
  lora_r: {{choices: [2, 4, 8]}}
  learning_rate: {{low: 1.0e-3, high: 1.0e-2, log: true}}
fixed: {{max_steps: {steps}, checkpoint_every: 1, batch_size: 2, max_tokens: 32, eval_items: 4, test_items: 4,
        warmup_steps: 0, target_modules: attention}}
sampler: {{type: random, seed: 0}}
n_trials: {trials}
"""
# fast heartbeats: a killed worker's trial is failed and retried within seconds
HEARTBEATS = {"PRICER_HEARTBEAT_S": "2", "PRICER_GRACE_S": "10"}


@dataclass
class SoakResult:
    workers: int
    trials: int
    killed_workers: int
    wall_s: float
    finished: int              # logical trials (a retry replaces its failed try) COMPLETE or PRUNED
    finished_once: bool        # exactly `trials` of them, each finished once
    running_optuna: int
    running_mlflow: int
    killed_trials: list[int]
    retried: int               # killed trials with a finished retry
    resumed: int               # ... whose retry resumed from the dead try's checkpoint
    parent_status: str
    parent_ends: int
    parent_ended_after_last_trial: bool
    storage_commits_per_s: float
    tracking_commits_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def admin(server: str):
    """An autocommit connection to the PostgreSQL server (CREATE/DROP DATABASE run outside a transaction)."""
    import psycopg

    return psycopg.connect(server, autocommit=True)


@contextlib.contextmanager
def bench_databases(server: str, prefix: str, what: str, *,
                    keep: bool = False) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """Two fresh databases on `server` for a bench's study, dropped afterwards unless `keep`:
    yields their names and their URLs, each keyed ``storage`` and ``tracking``.

    Raises:
        SpecError: the server refused to create them (one line, the password hidden).
    """
    names = {"storage": prefix, "tracking": f"{prefix}_mlflow"}
    base = server.rsplit("/", 1)[0]
    try:
        with admin(server) as conn:
            for db in names.values():
                conn.execute(f'CREATE DATABASE "{db}"')
    except Exception as exc:  # noqa: BLE001 -- any driver error is one line for the user
        raise SpecError(f"--storage {redact(server)}: can't create the {what}'s databases ({redact(exc)})") from None
    try:
        yield names, {k: f"{base}/{db}" for k, db in names.items()}
    finally:
        if not keep:
            with admin(server) as conn:
                for db in names.values():
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _commits(server: str, database: str) -> int:
    with admin(server) as conn:
        return int(conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                                 (database,)).fetchone()[0])


def run_soak(server: str, sample: str, out: Path, *, workers: int, trials: int, kill: int = 2, steps: int = 4,
             keep: bool = False) -> SoakResult:
    """Run the soak; `server` is a PostgreSQL URL whose user may create databases.

    Raises:
        SpecError: no PostgreSQL there, or fewer workers than there are to kill plus one.
    """
    if not server.startswith("postgresql"):
        raise SpecError(f"--storage {redact(server)}: the soak needs a PostgreSQL server (it creates two databases)")
    if workers < kill + 1 or trials < kill:
        raise SpecError(f"--workers {workers} --trials {trials}: need more workers than the {kill} killed, and as many trials")
    tag = uuid.uuid4().hex[:8]
    with bench_databases(server, f"pricer_soak_{tag}", "soak", keep=keep) as (names, urls):
        out.mkdir(parents=True, exist_ok=True)
        study_file = out / f"soak-{tag}.yaml"
        study_file.write_text(STUDY.format(name=f"soak-{tag}", workdir=out / f"runs-{tag}", sample=sample,
                                           steps=steps, trials=trials))
        os.environ.update(HEARTBEATS)
        spec = load_study(study_file).with_overrides(storage=urls["storage"], tracking_uri=urls["tracking"])
        return _soak(spec, study_file, server, names, workers=workers, trials=trials, kill=kill)

def _soak(spec, study_file: Path, server: str, names: dict, *, workers: int, trials: int, kill: int) -> SoakResult:
    import optuna
    from optuna.trial import TrialState

    from sweeps.run.launch import open_run
    from sweeps.run.studies import close_storage

    close_storage(open_run(spec, progress=False)[2])
    slots = fleet_slots(spec, workers, [])
    commits = {k: _commits(server, db) for k, db in names.items()}
    started = time.monotonic()
    fleet = start_fleet(spec, study_file, slots, n_trials=trials)
    killed_trials: list[int] = []
    try:
        killed_trials = _kill_mid_trial(spec, fleet, kill)
        codes = fleet.wait()
    except BaseException:
        stop(fleet.procs, grace_s=10)
        raise
    wall = time.monotonic() - started
    rates = {k: (_commits(server, db) - commits[k]) / wall for k, db in names.items()}
    alive_codes = [c for c in codes if c != -signal.SIGKILL]
    if any(alive_codes):
        raise SpecError(f"soak: a worker that was not killed exited with {alive_codes}; see {fleet.logs}")

    from sweeps.run.studies import close_storage

    finished_study = optuna.load_study(study_name=spec.name, storage=spec.storage)
    all_trials = finished_study.get_trials(deepcopy=False)
    close_storage(finished_study)
    replaced = {t.system_attrs.get("failed_trial") for t in all_trials} - {None}
    logical = [t for t in all_trials if t.number not in replaced and not t.system_attrs.get(SURPLUS)]
    finished = [t for t in logical if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    tracker = MlflowTracker(spec.tracking_uri, spec.name, create=False)
    runs = tracker.runs("trial")
    retries = {t.system_attrs.get("failed_trial"): t for t in all_trials if t.system_attrs.get("failed_trial") is not None}

    def retry_of(number: int):
        seen = retries.get(number)
        while seen is not None and seen.number in retries:  # a retry that was itself killed
            seen = retries[seen.number]
        return seen

    retried = [retry_of(n) for n in killed_trials]
    resumed = 0
    for retry in retried:
        if retry is not None and retry.state in (TrialState.COMPLETE, TrialState.PRUNED):
            tags = tracker.client.get_run(retry.user_attrs[RUN_ID_ATTR]).data.tags
            resumed += RESUMED in tags
    parent = tracker.client.get_run(tracker.study_runs(spec.name)[0])
    ends = tracker.client.get_metric_history(parent.info.run_id, "parent_run_ends")
    last_trial_end = max((r.info.end_time or 0) for r in runs) if runs else 0
    return SoakResult(
        workers=workers, trials=trials, killed_workers=len(killed_trials), wall_s=round(wall, 1),
        finished=len(finished), finished_once=len(finished) == trials == len(logical),
        running_optuna=sum(t.state == TrialState.RUNNING for t in all_trials),
        running_mlflow=sum(r.info.status == "RUNNING" for r in runs), killed_trials=killed_trials,
        retried=sum(r is not None and r.state in (TrialState.COMPLETE, TrialState.PRUNED) for r in retried),
        resumed=resumed, parent_status=parent.info.status, parent_ends=len(ends),
        parent_ended_after_last_trial=(parent.info.end_time or 0) >= last_trial_end,
        storage_commits_per_s=round(rates["storage"], 1), tracking_commits_per_s=round(rates["tracking"], 1))


def _kill_mid_trial(spec, fleet, kill: int, timeout_s: float = 1800) -> list[int]:
    """SIGKILL, process group and all, the workers of `kill` RUNNING trials that have saved a
    checkpoint; returns those trials' numbers."""
    import optuna
    from optuna.trial import TrialState

    storage = optuna.storages.RDBStorage(spec.storage)  # one engine for the whole watch, not one a poll
    by_pid = {proc.pid: proc for proc in fleet.procs}
    trials_dir = Path(spec.workdir).resolve() / "trials"
    tracker = None
    killed: dict[int, int] = {}  # trial number -> worker pid
    deadline = time.monotonic() + timeout_s
    while len(killed) < kill:
        if time.monotonic() > deadline or all(p.poll() is not None for p in fleet.procs):
            raise SpecError(f"soak: only {len(killed)} of {kill} trials could be caught mid-training; give "
                            "trials more steps (--steps)")
        time.sleep(0.5)
        try:
            running = optuna.load_study(study_name=spec.name, storage=storage).get_trials(
                deepcopy=False, states=(TrialState.RUNNING,))
        except KeyError:  # not created yet
            continue
        for trial in running:
            checkpointed = (trials_dir / f"{trial.number:05d}" / "checkpoint").is_dir()
            if trial.number in killed or not checkpointed or RUN_ID_ATTR not in trial.user_attrs:
                continue
            tracker = tracker or MlflowTracker(spec.tracking_uri, spec.name, create=False)
            worker = tracker.client.get_run(trial.user_attrs[RUN_ID_ATTR]).data.tags.get(WORKER, "")
            pid = int(worker.rsplit(":", 1)[1]) if ":" in worker else -1
            if pid in by_pid and pid not in killed.values() and by_pid[pid].poll() is None:
                os.killpg(pid, signal.SIGKILL)  # the worker and its trial process, at once
                killed[trial.number] = pid
                if len(killed) == kill:
                    break
    storage.engine.dispose()
    return sorted(killed)
