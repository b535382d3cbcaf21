"""`pricer launch`, `pricer leaderboard`, `pricer export`, `pricer ui` and `pricer demo`: run a
study, read what it wrote, export its best trial (or an ensemble), serve its MLflow UI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pricer.errors import SpecError
from sweeps.cli.flags import add_json_flag, add_tracking_uri_flag
from sweeps.cli.output import print_json, print_leaderboard, print_table, wide_console


def _print_leaderboard(name: str, tracking_uri: str) -> list:
    from sweeps.results.leaderboard import failures, leaderboard

    rows = leaderboard(tracking_uri, name)
    print_leaderboard(rows, f"{name}: trials and baselines on the validation items, best first")
    if line := failures(rows):
        wide_console().print(line, markup=False, highlight=False)
    return rows


def cmd_launch(args: argparse.Namespace) -> int:
    from sweeps.run.launch import launch
    from sweeps.spec.study import load_study, store_urls

    storage, tracking_uri = store_urls(args.storage, args.tracking_uri)
    spec = load_study(args.study).with_overrides(storage=storage, tracking_uri=tracking_uri, n_trials=args.n_trials)
    if args.workers is not None or args.gpus is not None:
        from sweeps.cli.fleet import cmd_fleet

        return cmd_fleet(args, spec)
    from sweeps.run.studies import close_storage

    study = launch(spec)
    states = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    close_storage(study)  # counting reopened a connection
    print(f"study {spec.name}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
    _print_leaderboard(spec.name, spec.tracking_uri)
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from sweeps.results.leaderboard import leaderboard
    from sweeps.spec.study import locate

    name, tracking_uri = locate(args.study, args.tracking_uri)
    if args.json:
        print_json([row.to_dict() for row in leaderboard(tracking_uri, name)])
    else:
        _print_leaderboard(name, tracking_uri)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sweeps.results.export import export
    from sweeps.spec.study import locate
    from sweeps.track.redact import redact

    if args.register is not None:
        from sweeps.track.registry import check_model_name

        check_model_name(args.register)  # before anything is exported
    name, tracking_uri = locate(args.study, args.tracking_uri)
    if args.ensemble is not None:
        from sweeps.results.ensemble import export_ensemble

        if args.trial is not None or args.merge:
            raise SpecError("--ensemble: combines the top trials; it takes neither --trial nor --merge")
        result = export_ensemble(tracking_uri, name, args.out, k=args.ensemble, baselines=args.baselines)
        _print_ensemble(result)
        out = result.folder
    else:
        out = export(tracking_uri, name, args.out, trial=args.trial, merge=args.merge)
        print(out)
    if args.register:
        from sweeps.results.ensemble import register_ensemble
        from sweeps.results.export import MERGED, register

        if args.ensemble is not None:
            uri, version = register_ensemble(tracking_uri, name, out, args.register)
        else:
            uri, version = register(tracking_uri, name, out / MERGED if args.merge else out, args.register,
                                    trial=args.trial)
        print(f"registered {args.register} version {version} ({uri}); serve it with\n"
              f"  MLFLOW_TRACKING_URI={redact(tracking_uri)} mlflow models serve -m models:/{args.register}/{version} "
              "--env-manager local")
    return 0


def _print_ensemble(result) -> None:
    """The ensemble beside its members, then paired with each member and baseline on the test split."""
    rows = [(s.name, "" if s is result.ensemble else f"{s.weight:.2f}", f"{s.val.mae:,.2f}",
             f"{s.test.mae:,.2f}" if s.test else "–", f"{s.test.rmsle:.3f}" if s.test else "–",
             f"{s.test.hit_rate:.1%}" if s.test else "–") for s in [result.ensemble, *result.members]]
    console = print_table(f"ensemble -> {result.folder} (weights fitted on {result.ensemble.val.n} validation "
                          f"items; scored on {result.ensemble.test.n if result.ensemble.test else 0} test items)",
                          ("", "weight", "val $ error", "test $ error", "test RMSLE", "test hits %"), rows,
                          console=wide_console(), styles={0: "bold"})
    from rich.markup import escape

    for paired in result.paired:  # member and baseline names come from MLflow tags
        console.print(escape(f"test, paired: {paired.sentence()}"), soft_wrap=True)
    if result.paired:
        console.print("The ensemble beats every member on the test items." if result.beats_every_member else
                      "The ensemble does not beat every member on the test items (see above).")


def cmd_ui(args: argparse.Namespace) -> int:
    import time

    from sweeps.results import ui
    from sweeps.run.stop import raise_if_stopped
    from sweeps.spec.study import locate

    name, tracking_uri = locate(args.study, args.tracking_uri)
    view = ui.runs_view(tracking_uri, name)  # a study that was never launched fails here
    if args.host not in ui.LOOPBACK:
        print(f"warning: serving on {args.host}: MLflow's UI has no login; anyone who reaches it can "
              "read and delete runs", file=sys.stderr)
    proc = ui.start(tracking_uri, host=args.host, port=args.port)
    try:
        url = ui.server_url(args.host, args.port)
        ui.wait_ready(proc, url)
        print(f"MLflow UI for {name} at {url}/{view} (Ctrl-C stops it)", flush=True)
        while proc.poll() is None:  # not wait(): a stop whose exception was lost is seen here
            raise_if_stopped()
            time.sleep(0.5)
    finally:
        ui.stop(proc)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pricer.phases import Phases, phase, recording
    from sweeps.cli import demo
    from sweeps.results.ensemble import export_ensemble
    from sweeps.run.launch import launch
    from sweeps.run.process import trial_context
    from sweeps.spec.study import load_study

    phases = Phases([demo.started()])
    spec = load_study(args.study)
    workdir = Path(spec.workdir)
    log_file = None if args.verbose else workdir / demo.LOG_NAME
    print(f"{spec.name}: {spec.n_trials} trials on {spec.data.source}"
          + (f" (library output: {log_file}; -v shows it here)" if log_file else ""), flush=True)
    with recording(phases), demo.chatter_to(log_file):
        launch(spec, progress=args.verbose, on_trial=lambda t: print(demo.trial_line(t, spec.n_trials), flush=True))
        with phase("leaderboard"):
            _print_leaderboard(spec.name, spec.tracking_uri)
        # two trials and the random forest: a few minutes of CPU fine-tuning alone can't price well
        with phase("ensemble export"):
            result = export_ensemble(spec.tracking_uri, spec.name, workdir / "best", k=2)
    _print_ensemble(result)
    out = result.folder
    print(f"ensemble exported to {out}")
    print(f"  pricer predict --adapter {out} \"Product title and description ...\"")
    print(f"  pricer evaluate --adapter {out} --items ITEMS.jsonl --json")
    rows, wall, cpu = demo.finish(phases)
    demo.print_phases(rows, wall, cpu, workdir / demo.PHASES_NAME, trial_context().get_start_method())
    return 0


def add_launch_parser(sub: argparse._SubParsersAction) -> None:
    """``pricer launch``."""
    p = sub.add_parser("launch", help="run (or continue) an Optuna study from a YAML file")
    p.add_argument("study", type=Path, help="the study file, e.g. studies/quickstart.yaml")
    p.add_argument("--storage", default=None, help="the Optuna storage every worker shares, e.g. "
                   "postgresql://user@host/optuna (unset: PRICER_STORAGE, which keeps a password out of the "
                   "process list, else the study file's, else sqlite:///runs/<name>/optuna.db)")
    p.add_argument("--tracking-uri", default=None, help="the MLflow store (unset: PRICER_TRACKING_URI, else the "
                   "study file's, else sqlite:///runs/<name>/mlflow.db)")
    p.add_argument("--n-trials", type=int, default=None,
                   help="the study's total, shared by all workers (unset: the study file's)")
    p.add_argument("--workers", type=int, default=None, help="start N workers here; they share the cores and "
                   "need a PostgreSQL storage (unset: one, or one per GPU with --gpus)")
    p.add_argument("--gpus", default=None, metavar="0,1,...", help="one worker per device, each with its own "
                   "CUDA_VISIBLE_DEVICES (unset: no GPU pinning)")
    p.set_defaults(func=cmd_launch)


def add_study_parsers(sub: argparse._SubParsersAction) -> None:
    """``pricer leaderboard``, ``pricer export``, ``pricer ui`` and ``pricer demo``."""
    p = sub.add_parser("leaderboard", help="a study's trials and baselines, best first")
    p.add_argument("study", help="study YAML or study name")
    add_tracking_uri_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("export", help="the best (or a chosen) trial's adapter, or an ensemble, to a folder")
    p.add_argument("study", help="study YAML or study name")
    p.add_argument("--out", required=True, type=Path, help="the folder to write")
    p.add_argument("--trial", type=int, default=None, help="this trial's number instead of the best")
    p.add_argument("--merge", action="store_true", help="also write OUT/merged: the LoRA merged into a bf16 base")
    p.add_argument("--ensemble", type=int, default=None, metavar="K",
                   help="the top K trials plus the best classical baseline, weighted on validation")
    p.add_argument("--baselines", type=int, default=1, metavar="N",
                   help="with --ensemble: how many classical baselines join (best first)")
    p.add_argument("--register", default=None, metavar="NAME",
                   help="log it as an MLflow model and register a version of NAME (the merged one with --merge)")
    add_tracking_uri_flag(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ui", help="serve the MLflow UI on a study's store")
    p.add_argument("study", help="study YAML or study name")
    p.add_argument("--host", default="127.0.0.1", help="the address to serve on (the UI has no login)")
    p.add_argument("--port", type=int, default=5000, help="the port to serve on")
    add_tracking_uri_flag(p)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("demo", help="the quick start: launch, leaderboard, export")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="library output (MLflow, Optuna, datasets, progress bars) here instead of in the run's demo.log")
    p.add_argument("study", type=Path, nargs="?", default=Path("studies/quickstart.yaml"), help="the study file")
    p.set_defaults(func=cmd_demo)
