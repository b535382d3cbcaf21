"""`pricer bench fleet [--workers 16] [--trials 64]`: the fleet soak (`sweeps.bench.soak`), printed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sweeps.cli.output import print_json

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def cmd_bench_fleet(args: argparse.Namespace) -> int:
    from pricer.bench.speed import DEFAULT_SAMPLE
    from sweeps.bench.soak import run_soak

    server = args.storage or os.environ.get("PRICER_STORAGE") or DEFAULT_SERVER
    # the sample beside the checkout (where the tests find it) unless --data or PRICER_SAMPLE says
    beside = Path(__file__).resolve().parents[3] / "shared/data/amazon2023-sample/items.jsonl"
    sample = str(Path(args.data or (DEFAULT_SAMPLE if DEFAULT_SAMPLE.exists() else beside)).resolve())
    out = Path(args.out or "runs/bench-fleet")
    result = run_soak(server, sample, out, workers=args.workers, trials=args.trials, steps=args.steps)
    if args.json:
        print_json(result.to_dict())
        return 0
    r = result
    lines = [
        f"fleet soak: {r.workers} workers, {r.trials} trials, {r.killed_workers} workers killed (SIGKILL) "
        f"mid-trial, {r.wall_s:.0f} s wall",
        f"trials finished: {r.finished} of {r.trials}; each exactly once: {'yes' if r.finished_once else 'NO'}",
        f"left RUNNING: {r.running_optuna} in Optuna, {r.running_mlflow} in MLflow",
        f"killed trials {r.killed_trials}: {r.retried} retried to the end, {r.resumed} resumed from their checkpoint",
        f"parent run: {r.parent_status}, ended {r.parent_ends} time(s), "
        f"{'after' if r.parent_ended_after_last_trial else 'BEFORE'} the last trial",
        f"storage: {r.storage_commits_per_s:.1f} committed transactions/s (Optuna), "
        f"{r.tracking_commits_per_s:.1f} (MLflow)",
    ]
    print("\n".join(lines))
    ok = (r.finished_once and not r.running_optuna and not r.running_mlflow and r.retried == r.killed_workers
          and r.parent_ends == 1 and r.parent_ended_after_last_trial)
    return 0 if ok else 1


def add_bench_fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=16, help="workers on this machine")
    p.add_argument("--trials", type=int, default=64, help="the study's total")
    p.add_argument("--steps", type=int, default=5, help="training steps a trial")
    p.add_argument("--storage", default=None, help="a PostgreSQL server URL whose user may create "
                   "databases (unset: PRICER_STORAGE, else the local test server)")
    p.add_argument("--data", default=None, help="built dataset DIR or jsonl (unset: the shared sample)")
    p.add_argument("--out", type=Path, default=None, help="the soak's folder (unset: runs/bench-fleet)")
