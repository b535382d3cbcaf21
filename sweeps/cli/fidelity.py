"""`pricer bench fidelity STUDY.yaml`: Spearman correlation and regret of a search on a fraction
of the data against the full data (`sweeps.bench.fidelity`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pricer.errors import SpecError
from sweeps.cli.output import print_json


def cmd_bench_fidelity(args: argparse.Namespace) -> int:
    from sweeps.bench.fidelity import bench_spec, draw_configs, parse_fractions, run_fidelity_bench
    from sweeps.spec.study import load_study

    if args.max_steps is not None and args.epochs is not None:
        raise SpecError("--max-steps and --epochs: give one (steps: every fraction trains as long; epochs: "
                        "a fraction trains that share of the steps)")
    fractions = parse_fractions(args.fractions)
    spec = bench_spec(load_study(args.study), max_steps=args.max_steps, epochs=args.epochs,
                      train_items=args.train_items, eval_items=args.eval_items, test_items=args.test_items)
    configs = draw_configs(spec, args.n_configs, seed=args.seed)
    out = args.out or Path(spec.workdir) / "bench-fidelity"
    result = run_fidelity_bench(spec, fractions, configs, Path(out))
    if args.json:
        print_json(result)
        return 0
    print_fidelity(result, f"bench fidelity of {spec.name}: {len(configs)} configurations x "
                           f"{len(fractions)} fractions, test $ error (folders under {out})")
    return 0


def print_fidelity(result: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def num(value, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    table = Table(title=title)
    for column in ("fraction", "train items", "Spearman vs 1.0", "regret $", "winner", "within model: Spearman, regret",
                   "train s", "vs 1.0"):
        table.add_column(column, justify="right")
    items = {}
    for run in result["runs"]:
        items.setdefault(run["fraction"], run["train_items"])
    for row in result["fractions"]:
        a = row["across_models"]
        within = "; ".join(f"{m} {num(c['spearman'], '.2f')}, ${num(c['regret'], ',.2f')}"
                           for m, c in row["within_model"].items()) or "n/a (< 2 configs per model)"
        table.add_row(f"{row['fraction']:g}", str(items.get(row["fraction"], "")), num(a["spearman"], ".2f"),
                      num(a["regret"], ",.2f"), num(a["winner"], "d"), within, f"{row['train_s']:,.0f}",
                      f"{num(row['train_s_vs_full'], '.2f')}x")
    console = Console(width=170)
    console.print(table)
    runs = Table(title="every run: test $ error (steps)")
    runs.add_column("config")
    runs.add_column("model")
    fractions = [row["fraction"] for row in result["fractions"]]
    for f in fractions:
        runs.add_column(f"{f:g}", justify="right")
    for index, config in enumerate(result["configs"]):
        cells = {r["fraction"]: f"{r['test_mae']:,.2f} ({r['steps']})" for r in result["runs"] if r["config"] == index}
        model = next((r["model"] for r in result["runs"] if r["config"] == index), config.get("model", ""))
        runs.add_row(str(index) + (" default" if index == 0 else ""), model, *(cells.get(f, "") for f in fractions))
    console.print(runs)


def add_fidelity_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fractions", default="0.1,0.25,1.0", help="fractions of the train split")
    p.add_argument("--n-configs", type=int, default=4, help="configurations (the default first)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="steps per run: every fraction trains as long (unset: epoch-based)")
    p.add_argument("--epochs", type=float, default=None, help="passes over each fraction")
    p.add_argument("--train-items", type=int, default=None, help="cap the train split first")
    p.add_argument("--eval-items", type=int, default=None, help="validation items per run (unset: the study's)")
    p.add_argument("--test-items", type=int, default=None,
                   help="test items each run is ranked on (unset: the study's)")
    p.add_argument("--seed", type=int, default=0, help="the configurations' draw")
    p.add_argument("--out", type=Path, default=None, help="where the runs and fidelity.json go "
                   "(unset: the study's workdir/bench-fidelity)")
