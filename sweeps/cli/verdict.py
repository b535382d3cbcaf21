"""`pricer compare STUDY A B` and `pricer report STUDY`: the paired comparison of two runs on the
study's test items, and the whole study's verdict as one HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from sweeps.cli.flags import add_json_flag, add_tracking_uri_flag
from sweeps.cli.output import print_json, print_table, wide_console


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from sweeps.results.verdict import compare_runs
    from sweeps.spec.study import locate

    name, tracking_uri = locate(args.study, args.tracking_uri)
    paired = compare_runs(tracking_uri, name, args.a, args.b)
    if args.json:
        print_json(paired.to_dict())
        return 0
    console = print_table(f"{name}: {paired.n:,} test items, paired", ("", "test $ error", "95% CI"),
                          [(f"A  {paired.a}", f"{paired.a_mae:,.2f}", _ci(paired.a_interval)),
                           (f"B  {paired.b}", f"{paired.b_mae:,.2f}", _ci(paired.b_interval)),
                           ("A - B (paired)", f"{paired.difference:+,.2f}",
                            _ci(paired.difference_interval, signed=True))], console=wide_console())
    console.print(f"Wilcoxon signed-rank p = {paired.p_value:.4g}")
    console.print(escape(paired.sentence()))
    return 0


def _ci(interval: tuple[float, float], signed: bool = False) -> str:
    spec = "+,.2f" if signed else ",.2f"
    return f"[{interval[0]:{spec}}, {interval[1]:{spec}}]"


def cmd_report(args: argparse.Namespace) -> int:
    from sweeps.results.report import write_report
    from sweeps.spec.study import load_study, locate, store_urls

    name, tracking_uri = locate(args.study, args.tracking_uri)
    storage, _ = store_urls()
    if storage is None and Path(args.study).suffix in (".yaml", ".yml"):
        storage = load_study(args.study, fetch=False).storage  # a reader never downloads
    out = args.out or Path(f"{name}-report.html")
    report = write_report(tracking_uri, name, out, storage=storage)
    print(f"{out} ({report.size_kb:,.0f} KB; logged to the study's MLflow run as {report.artifact})")
    print(f"  {report.headline}")
    for sentence in report.sentences:
        print(f"  {sentence}")
    return 0


def add_verdict_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="two runs of a study, paired on its test items")
    p.add_argument("study", help="study YAML or study name")
    p.add_argument("a", help="a trial number, a run id, or a baseline name (random_forest)")
    p.add_argument("b", help="the other run")
    add_tracking_uri_flag(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="the study's verdict as one self-contained HTML page")
    p.add_argument("study", help="study YAML or study name")
    p.add_argument("--out", type=Path, default=None, help="the page (unset: STUDY-report.html)")
    add_tracking_uri_flag(p)
    p.set_defaults(func=cmd_report)
