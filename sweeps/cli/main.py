"""The `pricer` command: a table of thin sub-commands that parse, call the library, print
(`DESCRIPTION` is what users read first, in ``pricer --help``). The commands live one module per
area (`sweeps.cli.data`, `.predict`, `.study`, `.bench`, ...); this module keeps the parser.

This is the one module that imports both `pricer` and `sweeps`. Heavy imports (torch, optuna,
mlflow) happen inside each command so that `pricer --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pricer.errors import PricerError
from sweeps.cli.bench import add_bench_parsers, with_bench_target
from sweeps.cli.data import add_data_parsers
from sweeps.cli.flags import Parser
from sweeps.cli.plan import add_plan_parser
from sweeps.cli.predict import add_predict_parsers
from sweeps.cli.refit import add_refit_parser
from sweeps.cli.study import add_launch_parser, add_study_parsers
from sweeps.cli.verdict import add_verdict_parsers

DESCRIPTION = """\
Fine-tune small open LLMs with QLoRA (4-bit base + LoRA) to predict a product's price from its
description, let Optuna search the base model, LoRA rank, learning rate and more, and log every
trial to MLflow. Then read the leaderboard, export the best adapter and price things with it.

Start here:
  make demo                               a real study end to end on 2 CPU cores (a few minutes)
  pricer launch studies/quickstart.yaml   the same study, by hand
  pricer leaderboard quickstart           its trials and the baselines, best first
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pricer", description=DESCRIPTION,
                    epilog="`pricer COMMAND --help` lists a command's flags. README.md has the whole tour.")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    add_data_parsers(sub)
    add_predict_parsers(sub)
    add_bench_parsers(sub)
    add_verdict_parsers(sub)
    add_launch_parser(sub)
    add_refit_parser(sub)
    add_plan_parser(sub)
    add_study_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sweeps.run.stop import sigterm_interrupts

    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(with_bench_target(list(argv)))
    func: Callable[[argparse.Namespace], int] = args.func
    sigterm_interrupts()  # a scheduler's or `kill`'s stop cleans up as Ctrl-C does
    try:
        return func(args) or 0
    except PricerError as exc:
        from sweeps.track.redact import redact

        print(f"pricer: error: {redact(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"pricer: {exc or 'interrupted'}", file=sys.stderr)
        return 143 if type(exc).__name__ == "Terminated" else 130


if __name__ == "__main__":
    sys.exit(main())
