"""The `pricer` command: a table of thin sub-commands that parse, call the library, print.

This is the one module that imports both `pricer` and `sweeps`. Heavy imports (torch, optuna,
mlflow) happen inside each command so that `pricer --help` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from pricer.errors import PricerError, SpecError
from pricer.predict.pricetree import DECODES
from sweeps.cli.bench import add_bench_parsers
from sweeps.cli.output import print_json, wide_console
from sweeps.cli.verdict import add_verdict_parsers

# --- data and baselines (pricer) --------------------------------------------------------------

def cmd_data_build(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from pricer.data.dataset import build

    report = build(args.source, args.out, limit=args.limit, seed=args.seed, balance=args.balance,
                   columns=_columns(args))
    table = Table(title=f"{report.kept:,} items from {report.lines:,} lines -> {report.out}")
    for column in ("split", "n", "min $", "median $", "mean $", "max $"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for name, s in report.splits.items():
        table.add_row(name, f"{s.n:,}", f"{s.min:,.2f}", f"{s.median:,.2f}", f"{s.mean:,.2f}", f"{s.max:,.2f}")
    console = Console()
    console.print(table)
    dropped = ", ".join(f"{reason} {n:,}" for reason, n in report.dropped.items()) or "none"
    console.print(f"dropped: {dropped}")
    console.print("categories: " + ", ".join(f"{c} {n:,}" for c, n in report.categories.items()))
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from pricer.data.dataset import load_items, load_splits
    from pricer.predict.baselines import run_baselines

    splits = load_splits(args.data)
    test_items = load_items(args.test) if args.test else None
    results = run_baselines(splits, test_items)
    if args.json:
        print_json([{"name": name, "mae": m.mae, "rmsle": m.rmsle, "hit_rate": m.hit_rate, "n": m.n}
                     for name, m in results])
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"baselines: fitted on {len(splits['train']):,} train items")
    for column in ("name", "$ error", "RMSLE", "hits %", "n"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for name, m in results:
        table.add_row(name, f"{m.mae:,.2f}", f"{m.rmsle:.3f}", f"{m.hit_rate:.1%}", f"{m.n:,}")
    Console().print(table)
    return 0


# --- one trial (pricer) -----------------------------------------------------------------------

_TRAIN_FLAGS = {"max_steps": "max_steps", "epochs": "epochs", "lora_r": "lora_r", "lora_alpha": "lora_alpha",
                "lora_dropout": "lora_dropout", "target_modules": "target_modules", "lr": "learning_rate",
                "lr_scheduler": "lr_scheduler", "batch_size": "batch_size", "grad_accum": "grad_accum",
                "warmup_steps": "warmup_steps", "max_tokens": "max_tokens", "quantization": "quantization",
                "seed": "seed", "eval_every": "eval_every", "eval_items": "eval_items",
                "train_items": "train_items", "test_items": "test_items", "decode": "decode"}


def cmd_train(args: argparse.Namespace) -> int:
    from pricer.train.loop import TrainConfig, train

    values = {field: getattr(args, flag) for flag, field in _TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    result = train(TrainConfig.from_dict({"model": args.model, **values}), args.data, args.out)
    _print_metrics_table(f"{args.model}: {result.steps} steps in {result.wall_s:.0f} s "
                         f"({result.train_tokens_per_s:,.0f} train tokens/s) -> {result.adapter_dir}",
                         {"validation": result.val_metrics, "test": result.test_metrics})
    return 0


def _columns(args: argparse.Namespace):
    """The --text-columns / --price-column mapping, None when neither is given."""
    from pricer.data.tables import Columns

    if args.text_columns is None and args.price_column is None:
        return None
    return Columns.parse(args.text_columns, args.price_column)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pricer.data.scoring import scoring_items
    from pricer.predict.evaluate import EVAL_BATCH_SIZE
    from pricer.predict.pricing import score_catalog

    levels = _levels(args)
    scoring = scoring_items(args.items, _columns(args), limit=args.limit)
    batch_size = args.batch_size or EVAL_BATCH_SIZE
    if args.adapter:
        from pricer.predict.predictor import load_predictor

        predictor = load_predictor(args.adapter)
        if args.decode and hasattr(predictor, "decode"):
            predictor = dataclasses.replace(predictor, decode=args.decode)
        name = predictor.spec.name if hasattr(predictor, "spec") else predictor.kind
    else:
        from pricer.model.catalog import resolve
        from pricer.model.loading import load_model
        from pricer.model.prompts import DEFAULT_MAX_TOKENS
        from pricer.predict.predictor import ModelPredictor

        spec = resolve(args.model)
        model, tokenizer = load_model(spec, "nf4")
        name = spec.name
        predictor = ModelPredictor("untrained", model, tokenizer, spec, DEFAULT_MAX_TOKENS, {},
                                   args.decode or "greedy")
    result = score_catalog(predictor, scoring, levels=levels, batch_size=batch_size, progress=True)
    if args.json:
        print_json({**result.to_dict(), "model": name,
                     "adapter": str(args.adapter) if args.adapter else None, "items": str(args.items)})
        return 0
    _print_metrics_table(f"{args.adapter or name} on {args.items}",
                         {"all rows": result.metrics, "in training range": result.in_range,
                          "outside it": result.out_of_range})
    for row in result.outside[:10]:
        predicted = "-" if row["predicted"] is None else f"{row['predicted']:,.2f}"
        print(f"  row {row['row']}: ${row['price']:,.2f} is outside the training range; predicted {predicted}, "
              f"error ${row['error']:,.2f}")
    for number, why in result.unreadable[:10]:
        print(f"  row {number}: not scored ({why})", file=sys.stderr)
    if len(result.unreadable) > 10:
        print(f"  ... and {len(result.unreadable) - 10:,} more rows not scored", file=sys.stderr)
    return 0


def _levels(args: argparse.Namespace) -> tuple[float, float] | None:
    from pricer.predict.intervals import parse_levels

    return parse_levels(args.levels) if args.levels else None


def cmd_predict(args: argparse.Namespace) -> int:
    from pricer.predict.predictor import load_predictor
    from pricer.predict.pricing import gives_ranges, price_texts

    levels = _levels(args)
    if args.input is not None:
        return _predict_table(args, levels)
    if args.text_columns or args.out:
        raise SpecError("--text-columns and --out go with --input FILE")
    from pricer.data.curate import clean_text

    texts = args.texts or [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise SpecError("nothing to price: give product texts, pipe them one per line, or --input FILE")
    # a literal "\n" on the command line separates the title from the description
    cleaned = [clean_text(t.replace("\\n", "\n")) for t in texts]
    predictor = load_predictor(args.adapter)
    prices, ranges = price_texts(predictor, cleaned, levels=levels, batch_size=args.batch_size)
    ranges = ranges or [None] * len(prices)
    if args.json:
        print_json([{"text": t, "price": p, "price_low": r.low if r else None, "price_high": r.high if r else None}
                    for t, p, r in zip(texts, prices, ranges, strict=True)])
        return 0
    for price, r in zip(prices, ranges, strict=True):
        print("-" if price is None else f"{price:.2f}" + (f"  [{r.low:.2f}, {r.high:.2f}]" if r else ""))
    if not gives_ranges(predictor):
        print(f"note: no price range from this {predictor.kind} folder (ranges come from median decoding; "
              "an ensemble's random forest has no price distribution)", file=sys.stderr)
    return 0


def _predict_table(args: argparse.Namespace, levels: tuple[float, float] | None) -> int:
    from pricer.data.tables import Columns, out_format, read_table, texts_of
    from pricer.predict.predictor import load_predictor
    from pricer.predict.pricing import price_table

    if args.texts:
        raise SpecError("give product texts or --input FILE, not both")
    out = args.out or args.input.with_name(f"{args.input.stem}.priced.csv")
    out_format(out)
    columns = Columns.parse(args.text_columns, args.price_column)
    table = read_table(args.input)
    texts_of(table, columns)  # a wrong column name fails here, before the model loads
    report = price_table(load_predictor(args.adapter), table, out, columns=columns, levels=levels,
                         batch_size=args.batch_size)
    if args.json:
        print_json({"out": str(report.out), "rows": report.rows, "priced": report.priced, "ranges": report.ranges,
                     "problems": [{"row": n, "problem": why} for n, why in report.problems]})
        return 0
    print(f"{report.priced:,} of {report.rows:,} rows priced -> {report.out}")
    for number, why in report.problems[:10]:
        print(f"  row {number}: no price ({why})", file=sys.stderr)
    if len(report.problems) > 10:
        print(f"  ... and {len(report.problems) - 10:,} more rows without a price (column predict_problem)",
              file=sys.stderr)
    return 0


def _print_metrics_table(title: str, rows: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("", "$ error", "RMSLE", "hits %", "n", "misses"):
        table.add_column(column, justify="left" if not column else "right")
    for name, m in rows.items():
        if m is not None:
            table.add_row(name, f"{m.mae:,.2f}", f"{m.rmsle:.3f}", f"{m.hit_rate:.1%}", f"{m.n:,}", f"{m.misses:,}")
    Console().print(table)


# --- sweeps -----------------------------------------------------------------------------------

def _print_leaderboard(name: str, tracking_uri: str) -> list:
    from sweeps.results.leaderboard import leaderboard, render

    rows = leaderboard(tracking_uri, name)
    console = wide_console()
    console.print(render(rows, title=f"{name}: trials and baselines on the validation items, best first"))
    return rows


def cmd_launch(args: argparse.Namespace) -> int:
    from sweeps.run.launch import launch
    from sweeps.spec.study import load_study

    spec = load_study(args.study).with_overrides(storage=args.storage, tracking_uri=args.tracking_uri,
                                                 n_trials=args.n_trials)
    study = launch(spec)
    states = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
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
    """The ensemble beside its members, then against every baseline, on the test split."""
    from rich.table import Table

    table = Table(title=f"ensemble -> {result.folder} (weights fitted on {result.ensemble.val.n} validation "
                        f"items; scored on {result.ensemble.test.n if result.ensemble.test else 0} test items)")
    for column in ("", "weight", "val $ error", "test $ error", "test RMSLE", "test hits %"):
        table.add_column(column, justify="left" if not column else "right")
    for s in [result.ensemble, *result.members]:
        test = s.test
        table.add_row(s.name, "" if s.name == "ensemble" else f"{s.weight:.2f}", f"{s.val.mae:,.2f}",
                      f"{test.mae:,.2f}" if test else "–", f"{test.rmsle:.3f}" if test else "–",
                      f"{test.hit_rate:.1%}" if test else "–", style="bold" if s.name == "ensemble" else None)
    console = wide_console()
    console.print(table)
    mine = result.ensemble.test
    if mine is None:
        return
    for name, m in result.baselines.items():
        change = (m.mae - mine.mae) / m.mae
        if abs(mine.mae - m.mae) < 0.005:  # the fit gave that baseline all the weight
            console.print(f"test $ error: ensemble {mine.mae:,.2f} ties {name} {m.mae:,.2f}")
            continue
        verdict = "beats" if mine.mae < m.mae else "loses to"
        console.print(f"test $ error: ensemble {mine.mae:,.2f} {verdict} {name} {m.mae:,.2f} "
                      f"({abs(change):.0%} {'lower' if change > 0 else 'higher'})")


def cmd_ui(args: argparse.Namespace) -> int:
    from sweeps.results import ui
    from sweeps.spec.study import locate

    name, tracking_uri = locate(args.study, args.tracking_uri)
    view = ui.runs_view(tracking_uri, name)  # a study that was never launched fails here
    if args.host not in ui.LOOPBACK:
        print(f"warning: serving on {args.host}: MLflow's UI has no login; anyone who reaches it can "
              "read and delete runs", file=sys.stderr)
    proc = ui.start(tracking_uri, host=args.host, port=args.port)
    try:
        url = f"http://{args.host}:{args.port}"
        ui.wait_ready(proc, url)
        print(f"MLflow UI for {name} at {url}/{view} (Ctrl-C stops it)", flush=True)
        proc.wait()
    finally:
        ui.stop(proc)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sweeps.results.ensemble import export_ensemble
    from sweeps.run.launch import launch
    from sweeps.spec.study import load_study

    spec = load_study(args.study)
    launch(spec)
    _print_leaderboard(spec.name, spec.tracking_uri)
    # two trials and the random forest: a few minutes of CPU fine-tuning alone can't price well
    result = export_ensemble(spec.tracking_uri, spec.name, Path(spec.workdir) / "best", k=2)
    _print_ensemble(result)
    out = result.folder
    print(f"ensemble exported to {out}")
    print(f"  pricer predict --adapter {out} \"Product title and description ...\"")
    print(f"  pricer evaluate --adapter {out} --items ITEMS.jsonl --json")
    return 0


# --- the table --------------------------------------------------------------------------------

def _add_data(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build curated datasets").add_subparsers(dest="data_cmd", required=True)
    p = data.add_parser("build", help="curate a source into train/validation/test")
    p.add_argument("--source", required=True, help="local jsonl (raw Amazon 2023 or curated), hf:// URL, or a "
                   "product table (.csv, .parquet; see --text-columns, --price-column)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--limit", type=int, default=None, help="read at most N source lines")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--balance", type=int, default=None, metavar="CAP",
                   help="price-balanced sampling: at most CAP items per dollar bucket")
    _add_columns(p)
    p.set_defaults(func=cmd_data_build)


def _add_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-columns", default=None, metavar="A,B,...",
                   help="a product table's text columns, title first (default: title,description,features,"
                        "details where present, or a curated text column)")
    p.add_argument("--price-column", default=None, metavar="NAME", help="a product table's price column (price)")


def _add_levels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--levels", default=None, metavar="LOW,HIGH",
                   help="the price range's quantile levels (default: the folder's, 0.1,0.9, calibrated); "
                        "other levels give the model's raw quantiles")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pricer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    _add_data(sub)

    p = sub.add_parser("baselines", help="score classical baselines")
    p.add_argument("--data", required=True, help="built dataset DIR or a jsonl")
    p.add_argument("--test", default=None, help="score on this items file instead of the test split")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_baselines)

    p = sub.add_parser("train", help="one 4-bit LoRA fine-tune")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--lora-r", type=int, default=None)
    p.add_argument("--lora-alpha", type=int, default=None)
    p.add_argument("--lora-dropout", type=float, default=None)
    p.add_argument("--target-modules", default=None, choices=["attention", "all-linear"])
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--grad-accum", type=int, default=None)
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--quantization", default=None, choices=["nf4", "none"])
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--lr-scheduler", default=None, choices=["linear", "cosine", "constant"])
    p.add_argument("--eval-every", type=int, default=None, help="validation every N steps (0: at the end)")
    p.add_argument("--eval-items", type=int, default=None, help="validation items per evaluation")
    p.add_argument("--train-items", type=int, default=None, help="use at most N train items")
    p.add_argument("--test-items", type=int, default=None, help="score at most N test items")
    p.add_argument("--decode", default=None, choices=DECODES,
                   help="how prices are read at validation/test and by the folder (median: of the "
                        "model's price distribution)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a model or adapter on items")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--adapter", type=Path)
    g.add_argument("--model")
    p.add_argument("--items", required=True, help="jsonl, CSV or Parquet items with prices, or a built DIR")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--decode", default=None, choices=DECODES,
                   help="--model: how prices are read (default greedy); --adapter: the folder's own")
    _add_columns(p)
    _add_levels(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="price product texts or a catalog file with an exported folder")
    p.add_argument("--adapter", required=True, type=Path, help="a folder of `pricer train` or `pricer export` "
                   "(adapter, merged or ensemble)")
    p.add_argument("texts", nargs="*", help="product texts (title, then \\n and the description); none: "
                   "read one per line from stdin")
    p.add_argument("--input", type=Path, default=None, help="a catalog to price: .jsonl, .csv or .parquet")
    p.add_argument("--out", type=Path, default=None, help="the priced catalog: .csv, .jsonl or .parquet "
                   "(default: INPUT.priced.csv)")
    p.add_argument("--batch-size", type=int, default=32)
    _add_columns(p)
    _add_levels(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    add_bench_parsers(sub)
    add_verdict_parsers(sub)

    p = sub.add_parser("launch", help="run (or continue) an Optuna study from a YAML file")
    p.add_argument("study", type=Path)
    p.add_argument("--storage", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--n-trials", type=int, default=None, help="the study's total, shared by all workers")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("leaderboard", help="a study's trials and baselines, best first")
    p.add_argument("study", help="study YAML or study name")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("export", help="the best (or a chosen) trial's adapter, or an ensemble, to a folder")
    p.add_argument("study")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--trial", type=int, default=None)
    p.add_argument("--merge", action="store_true", help="also write OUT/merged: the LoRA merged into a bf16 base")
    p.add_argument("--ensemble", type=int, default=None, metavar="K",
                   help="the top K trials plus the best classical baseline, weighted on validation")
    p.add_argument("--baselines", type=int, default=1, metavar="N",
                   help="with --ensemble: how many classical baselines join (best first; default 1)")
    p.add_argument("--register", default=None, metavar="NAME",
                   help="log it as an MLflow model and register a version of NAME (the merged one with --merge)")
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ui", help="serve the MLflow UI on a study's store")
    p.add_argument("study")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--tracking-uri", default=None)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("demo", help="the quick start: launch, leaderboard, export")
    p.add_argument("study", type=Path, nargs="?", default=Path("studies/quickstart.yaml"))
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args) or 0
    except PricerError as exc:
        from sweeps.track.redact import redact

        print(f"pricer: error: {redact(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pricer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
