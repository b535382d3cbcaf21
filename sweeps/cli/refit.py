"""`pricer refit STUDY.yaml`: retrain the study's best trials on all the data (`sweeps.run.refit`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sweeps.cli.output import print_leaderboard


def cmd_refit(args: argparse.Namespace) -> int:
    from sweeps.results.leaderboard import leaderboard
    from sweeps.run.refit import REFIT_ATTR, refit
    from sweeps.spec.study import load_study, store_urls

    storage, tracking_uri = store_urls(args.storage, args.tracking_uri)
    spec = load_study(args.study).with_overrides(storage=storage, tracking_uri=tracking_uri)
    study = refit(spec)
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(REFIT_ATTR) is not None]
    print(f"study {spec.name}: {len(done)} refit(s): " + ", ".join(
        f"trial {t.user_attrs[REFIT_ATTR]} {t.state.name.lower()}" for t in done))
    rows = leaderboard(spec.tracking_uri, spec.name)
    print_leaderboard(rows, f"{spec.name}: trials, refits and baselines on the validation items, best first")
    return 0


def add_refit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refit", help="retrain a study's top K trials on all the train data (its refit section)")
    p.add_argument("study", type=Path, help="the study file, e.g. studies/pricer-8b.yaml")
    p.add_argument("--storage", default=None, help="the study's Optuna storage (unset: PRICER_STORAGE, else the "
                   "study file's)")
    p.add_argument("--tracking-uri", default=None, help="the MLflow store (unset: PRICER_TRACKING_URI, else the "
                   "study file's)")
    p.set_defaults(func=cmd_refit)
