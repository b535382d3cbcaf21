"""`pricer launch STUDY --workers N [--gpus 0,1]`: start the fleet, wait, print what it did."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from sweeps.spec.study import StudySpec


def cmd_fleet(args: argparse.Namespace, spec: StudySpec) -> int:
    from sweeps.run.fleet import fleet_slots, parse_gpus, start_fleet, visible_gpus
    from sweeps.run.launch import open_run
    from sweeps.run.studies import SURPLUS, close_storage, open_storage

    slots = fleet_slots(spec, args.workers, parse_gpus(args.gpus, visible_gpus()))
    # stores checked (one error line, not N), data built, baselines fitted: once here, not N times at once
    close_storage(open_run(spec)[2])
    with start_fleet(spec, Path(args.study), slots, n_trials=args.n_trials) as fleet:
        for slot, proc, log in zip(fleet.slots, fleet.procs, fleet.logs, strict=True):
            device = f"GPU {slot.gpu}" if slot.gpu is not None else "CPU"
            print(f"worker {slot.index}: pid {proc.pid}, {device}, {slot.threads} thread(s), log {log}", flush=True)
        print(f"{len(slots)} workers on study {spec.name} (Ctrl-C stops them all)", flush=True)
        codes = fleet.wait()

    import optuna

    storage = open_storage(spec.storage)
    try:
        trials = optuna.load_study(study_name=spec.name, storage=storage).get_trials(deepcopy=False)
    finally:
        close_storage(storage)
    states = Counter("surplus (created past the total by a race, not run)" if t.system_attrs.get(SURPLUS)
                     else t.state.name.lower() for t in trials)
    print(f"study {spec.name}: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    failed = [(slot.index, code, log) for slot, code, log in zip(fleet.slots, codes, fleet.logs, strict=True) if code]
    for index, code, log in failed:
        last = next((ln for ln in reversed(log.read_text(errors="replace").splitlines()) if ln.strip()), "")
        print(f"worker {index} exited with code {code}: {last} (log {log})", file=sys.stderr)
    return max(codes) if failed else 0
