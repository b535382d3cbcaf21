"""`pricer bench faults [--faults a,b] [--workers 2] [--trials 6]`: the fault matrix (`sweeps.bench.faults`), printed."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sweeps.cli.output import print_json

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
HEADER = f"{'fault':<20} {'finished once':>13} {'RUNNING':>7} {'lost':>4} {'re-queued':>9} {'half-written':>12} {'wall s':>7}"


def cmd_bench_faults(args: argparse.Namespace) -> int:
    from pricer.data.sources import sample_path
    from sweeps.bench.faults import FAULTS, run_faults

    server = args.storage or os.environ.get("PRICER_STORAGE") or DEFAULT_SERVER
    sample = str(Path(args.data).resolve() if args.data else sample_path())
    faults = tuple(f.strip() for f in args.faults.split(",")) if args.faults else FAULTS
    if not args.json:
        print(HEADER, flush=True)

    def row(r) -> None:
        if not args.json:
            print(f"{r.fault:<20} {'yes' if r.finished_once else 'NO':>13} {r.running:>7} {r.lost:>4} "
                  f"{r.requeued:>9} {len(r.half_written):>12} {r.wall_s:>7.0f}", flush=True)

    results = run_faults(server, sample, Path(args.out or "runs/bench-faults"), faults=faults,
                         workers=args.workers, trials=args.trials, steps=args.steps,
                         outage_s=args.outage_s, on_result=row)
    if args.json:
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            print(f"{r.fault}: {r.injected}" + "".join(f"\n  half-written: {f}" for f in r.half_written))
        survived = sum(r.survived for r in results)
        print(f"survived {survived} of {len(results)} faults: {sum(r.lost for r in results)} trial(s) of the "
              f"budget lost, {sum(r.running for r in results)} left RUNNING")
    return 0 if all(r.survived for r in results) else 1


def add_bench_faults_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--faults", default=None, help="which, comma-separated (unset: all of mlflow-restart, "
                   "postgres-severed, worker-sigkill, disk-full, checkpoint-corrupt, second-ctrl-c)")
    p.add_argument("--workers", type=int, default=2, help="workers in each fault's fleet")
    p.add_argument("--trials", type=int, default=6, help="each fault's study total")
    p.add_argument("--steps", type=int, default=5, help="training steps a trial (a checkpoint each step)")
    p.add_argument("--outage-s", type=float, default=30.0, help="how long the MLflow server stays down")
    p.add_argument("--storage", default=None, help="a PostgreSQL server URL whose user may create databases "
                   "(unset: PRICER_STORAGE, else the local test server)")
    p.add_argument("--data", default=None, help="items jsonl (unset: the shared sample)")
    p.add_argument("--out", type=Path, default=None, help="the bench's folder (unset: runs/bench-faults)")
