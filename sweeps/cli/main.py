"""The `pricer` command: a table of thin sub-commands that parse, call the library, print
(`DESCRIPTION` is what users read first, in ``pricer --help``).

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
from sweeps.cli.flags import Parser, add_config_flags, add_json_flag, add_tracking_uri_flag, config_from_flags
from sweeps.cli.output import print_json, print_table, wide_console
from sweeps.cli.plan import add_plan_parser
from sweeps.cli.refit import add_refit_parser
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

# --- data and baselines (pricer) --------------------------------------------------------------

def cmd_data_build(args: argparse.Namespace) -> int:
    from pricer.data.dataset import build

    report = build(args.source, args.out, limit=args.limit, seed=args.seed, balance=args.balance,
                   sampling=_sampling(args), workers=args.workers, columns=_columns(args))
    console = print_table(f"{report.kept:,} items from {report.lines:,} lines of {len(report.sources)} source(s) "
                          f"in {report.seconds:,.1f} s ({report.workers} workers) -> {report.out}",
                          ("split", "n", "min $", "median $", "mean $", "max $"),
                          [(name, f"{s.n:,}", f"{s.min:,.2f}", f"{s.median:,.2f}", f"{s.mean:,.2f}", f"{s.max:,.2f}")
                           for name, s in report.splits.items()], console=wide_console())
    dropped = ", ".join(f"{reason} {n:,}" for reason, n in report.dropped.items()) or "none"
    console.print(f"dropped: {dropped}")
    for title, before, after in (("category", report.categories_before, report.categories),
                                 ("price band", report.bands_before, report.bands)):
        total_before, total = max(sum(before.values()), 1), max(report.kept, 1)
        print_table(f"items per {title}, before and after {_sampled_by(report)}",
                    (title, "before", "before %", "after", "after %"),
                    [(name, f"{n:,}", f"{100 * n / total_before:.1f}", f"{after.get(name, 0):,}",
                      f"{100 * after.get(name, 0) / total:.1f}") for name, n in before.items()],
                    console=console)
    return 0


def _sampled_by(report) -> str:
    if report.sampling is not None:
        weights = report.sampling["category_weights"]
        if isinstance(weights, dict):
            weights = ",".join(f"{name}={w:g}" for name, w in weights.items())
        return f"sampling (cap {report.sampling['cap']:,} a dollar, category weights {weights})"
    if report.balance is not None:
        return f"balancing (cap {report.balance:,} a dollar)"
    return "sampling (none: everything kept)"


def _sampling(args: argparse.Namespace):
    """The recipe's sampling from --sample-cap / --category-weights / --keep-all-from, or None."""
    from pricer.data.sampling import INVERSE, Sampling

    if args.sample_cap is None:
        if args.category_weights is not None or args.keep_all_from is not None:
            raise SpecError("--category-weights and --keep-all-from go with --sample-cap N")
        return None
    weights = Sampling.parse_weights(args.category_weights) if args.category_weights else INVERSE
    return Sampling(cap=args.sample_cap, category_weights=weights, keep_all_from=args.keep_all_from)


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
    print_table(f"baselines: fitted on {len(splits['train']):,} train items",
                ("name", "$ error", "RMSLE", "hits %", "n"),
                [(name, f"{m.mae:,.2f}", f"{m.rmsle:.3f}", f"{m.hit_rate:.1%}", f"{m.n:,}") for name, m in results])
    return 0


# --- one trial (pricer) -----------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from pricer.train.loop import TrainConfig, train

    result = train(config_from_flags(TrainConfig, args), args.data, args.out)
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
    from pricer.predict.pricing import gives_ranges, price_free_texts

    levels = _levels(args)
    if args.input is not None:
        return _predict_table(args, levels)
    if args.text_columns or args.out:
        raise SpecError("--text-columns and --out go with --input FILE")
    # every stdin line answers on its own output line, blank ones too ("-" and a problem)
    texts = args.texts or sys.stdin.read().splitlines()
    if not texts:
        raise SpecError("nothing to price: give product texts, pipe them one per line, or --input FILE")
    predictor = load_predictor(args.adapter)
    # a literal "\n" on the command line separates the title from the description
    answers = price_free_texts(predictor, [t.replace("\\n", "\n") for t in texts], levels=levels,
                               batch_size=args.batch_size)
    if args.json:
        print_json([{"text": t, "price": a.price, "price_low": a.range.low if a.range else None,
                     "price_high": a.range.high if a.range else None, "problem": a.problem}
                    for t, a in zip(texts, answers, strict=True)])
        return 0
    for number, a in enumerate(answers, start=1):
        r = a.range
        print("-" if a.price is None else f"{a.price:.2f}" + (f"  [{r.low:.2f}, {r.high:.2f}]" if r else ""))
        if a.problem:
            print(f"  text {number}: no price ({a.problem})", file=sys.stderr)
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
    print_table(title, ("", "$ error", "RMSLE", "hits %", "n", "misses"),
                [(name, f"{m.mae:,.2f}", f"{m.rmsle:.3f}", f"{m.hit_rate:.1%}", f"{m.n:,}", f"{m.misses:,}")
                 for name, m in rows.items() if m is not None])


# --- sweeps -----------------------------------------------------------------------------------

def _print_leaderboard(name: str, tracking_uri: str) -> list:
    from sweeps.results.leaderboard import leaderboard, render

    rows = leaderboard(tracking_uri, name)
    console = wide_console()
    console.print(render(rows, title=f"{name}: trials and baselines on the validation items, best first"))
    return rows


def cmd_launch(args: argparse.Namespace) -> int:
    from sweeps.run.launch import launch
    from sweeps.spec.study import load_study, store_urls

    storage, tracking_uri = store_urls(args.storage, args.tracking_uri)
    spec = load_study(args.study).with_overrides(storage=storage, tracking_uri=tracking_uri, n_trials=args.n_trials)
    if args.workers is not None or args.gpus is not None:
        from sweeps.cli.fleet import cmd_fleet

        return cmd_fleet(args, spec)
    from sweeps.run.opening import close_storage

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
    """The ensemble beside its members, then against every baseline, on the test split."""
    rows = [(s.name, "" if s is result.ensemble else f"{s.weight:.2f}", f"{s.val.mae:,.2f}",
             f"{s.test.mae:,.2f}" if s.test else "–", f"{s.test.rmsle:.3f}" if s.test else "–",
             f"{s.test.hit_rate:.1%}" if s.test else "–") for s in [result.ensemble, *result.members]]
    console = print_table(f"ensemble -> {result.folder} (weights fitted on {result.ensemble.val.n} validation "
                          f"items; scored on {result.ensemble.test.n if result.ensemble.test else 0} test items)",
                          ("", "weight", "val $ error", "test $ error", "test RMSLE", "test hits %"), rows,
                          console=wide_console(), bold={0})
    mine = result.ensemble.test
    if mine is None:
        return
    from rich.markup import escape

    for name, m in result.baselines.items():
        name = escape(name)  # a baseline's name comes from an MLflow tag
        change = (m.mae - mine.mae) / m.mae
        if abs(mine.mae - m.mae) < 0.005:  # the fit gave that baseline all the weight
            console.print(f"test $ error: ensemble {mine.mae:,.2f} ties {name} {m.mae:,.2f}")
            continue
        verdict = "beats" if mine.mae < m.mae else "loses to"
        console.print(f"test $ error: ensemble {mine.mae:,.2f} {verdict} {name} {m.mae:,.2f} "
                      f"({abs(change):.0%} {'lower' if change > 0 else 'higher'})")


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
    p.add_argument("--source", required=True, action="append",
                   help="local jsonl (raw Amazon 2023 or curated), hf:// URL, amazon2023:<Category> (the hub's "
                   "raw meta_<Category>.jsonl), or a product table (.csv, .parquet; see --text-columns, "
                   "--price-column); repeat for several, read in order (the first copy of a product wins)")
    p.add_argument("--out", required=True, type=Path, help="the folder the dataset (a datasets.DatasetDict) goes to")
    p.add_argument("--limit", type=int, default=None, help="read at most N lines of each source (unset: all)")
    p.add_argument("--seed", type=int, default=42, help="seed of the train/validation/test split and the sampling")
    p.add_argument("--workers", type=int, default=None, help="curating processes (unset: the machine's cores)")
    p.add_argument("--balance", type=int, default=None, metavar="CAP",
                   help="price-balanced sampling: at most CAP items per dollar bucket, drawn uniformly (unset: no balancing)")
    p.add_argument("--sample-cap", type=int, default=None, metavar="CAP",
                   help="the recipe's sampling: keep each dollar bucket up to CAP items, sample fuller ones "
                        "down to CAP with category weights (the recipe: 1200; unset: off)")
    p.add_argument("--category-weights", default=None, metavar="inverse|CAT=W,...",
                   help="with --sample-cap: inverse (1 / a category's share, the default) or weights such as "
                        "Automotive=1,*=5 (the recipe's)")
    p.add_argument("--keep-all-from", type=float, default=None, metavar="DOLLARS",
                   help="with --sample-cap: buckets from this price up keep everything (the recipe: 240; unset: none)")
    _add_columns(p)
    p.set_defaults(func=cmd_data_build)


def _add_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-columns", default=None, metavar="A,B,...",
                   help="a product table's text columns, title first (unset: title,description,features,"
                        "details where present, or a curated text column)")
    p.add_argument("--price-column", default=None, metavar="NAME",
                   help="a product table's price column (unset: price)")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """``pricer train``'s flags: every field of `TrainConfig`, with its type, default and help."""
    from pricer.train.loop import TrainConfig

    p.add_argument("--model", required=True, help=TrainConfig.__pydantic_fields__["model"].description)
    p.add_argument("--data", required=True, help="built dataset DIR (`pricer data build`) or a curated jsonl")
    p.add_argument("--out", required=True, type=Path, help="the folder the adapter goes to")
    add_config_flags(p, TrainConfig, skip=("model",))


def _add_levels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--levels", default=None, metavar="LOW,HIGH",
                   help="the price range's quantile levels (unset: the folder's, 0.1,0.9, calibrated); "
                        "other levels give the model's raw quantiles")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pricer", description=DESCRIPTION,
                    epilog="`pricer COMMAND --help` lists a command's flags. README.md has the whole tour.")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    _add_data(sub)

    p = sub.add_parser("baselines", help="score classical baselines")
    p.add_argument("--data", required=True, help="built dataset DIR or a jsonl")
    p.add_argument("--test", default=None, help="score on this items file instead of the test split")
    add_json_flag(p)
    p.set_defaults(func=cmd_baselines)

    p = sub.add_parser("train", help="one 4-bit LoRA fine-tune", later=_add_train_flags)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a model or adapter on items")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--adapter", type=Path, help="a folder of `pricer train` or `pricer export` "
                   "(adapter, merged or ensemble)")
    g.add_argument("--model", help="an untrained catalog model, local folder or hub id")
    p.add_argument("--items", required=True, help="jsonl, CSV or Parquet items with prices, or a built DIR")
    p.add_argument("--limit", type=int, default=None, help="score the first N items (unset: all)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="prompts per batch (unset: the evaluation default, 32)")
    p.add_argument("--decode", default=None, choices=DECODES,
                   help="--model: how prices are read (unset: greedy); --adapter: unset keeps the folder's own")
    _add_columns(p)
    _add_levels(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="price product texts or a catalog file with an exported folder")
    p.add_argument("--adapter", required=True, type=Path, help="a folder of `pricer train` or `pricer export` "
                   "(adapter, merged or ensemble)")
    p.add_argument("texts", nargs="*", help="product texts (title, then \\n and the description); none: "
                   "read one per line from stdin")
    p.add_argument("--input", type=Path, default=None, help="a catalog to price: .jsonl, .csv or .parquet")
    p.add_argument("--out", type=Path, default=None, help="the priced catalog: .csv, .jsonl or .parquet "
                   "(unset: INPUT.priced.csv)")
    p.add_argument("--batch-size", type=int, default=32, help="prompts per batch")
    _add_columns(p)
    _add_levels(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_predict)

    add_bench_parsers(sub)
    add_verdict_parsers(sub)

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

    add_refit_parser(sub)
    add_plan_parser(sub)

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
    p.add_argument("study", type=Path, nargs="?", default=Path("studies/quickstart.yaml"), help="the study file")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from sweeps.run.stop import sigterm_interrupts

    args = build_parser().parse_args(argv)
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
