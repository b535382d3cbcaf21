"""`pricer train`, `pricer evaluate` and `pricer predict`: one fine-tune, scoring a model or an
exported folder on items, pricing texts or a catalog."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from pricer.errors import SpecError
from pricer.predict.pricetree import DECODES
from sweeps.cli.flags import (
    add_columns_flags,
    add_config_flags,
    add_json_flag,
    columns_from_flags,
    config_from_flags,
)
from sweeps.cli.output import print_json, print_table


def cmd_train(args: argparse.Namespace) -> int:
    from pricer.train.config import TrainConfig
    from pricer.train.loop import train

    result = train(config_from_flags(TrainConfig, args), args.data, args.out)
    _print_metrics_table(f"{args.model}: {result.steps} steps in {result.wall_s:.0f} s "
                         f"({result.train_tokens_per_s:,.0f} train tokens/s) -> {result.adapter_dir}",
                         {"validation": result.val_metrics, "test": result.test_metrics})
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pricer.data.scoring import scoring_items
    from pricer.predict.evaluate import EVAL_BATCH_SIZE
    from pricer.predict.pricing import score_catalog

    levels = _levels(args)
    scoring = scoring_items(args.items, columns_from_flags(args), limit=args.limit)
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


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """``pricer train``'s flags: every field of `TrainConfig`, with its type, default and help."""
    from pricer.train.config import TrainConfig

    p.add_argument("--model", required=True, help=TrainConfig.__pydantic_fields__["model"].description)
    p.add_argument("--data", required=True, help="built dataset DIR (`pricer data build`) or a curated jsonl")
    p.add_argument("--out", required=True, type=Path, help="the folder the adapter goes to")
    add_config_flags(p, TrainConfig, skip=("model",))


def _add_levels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--levels", default=None, metavar="LOW,HIGH",
                   help="the price range's quantile levels (unset: the folder's, 0.1,0.9, calibrated); "
                        "other levels give the model's raw quantiles")


def add_predict_parsers(sub: argparse._SubParsersAction) -> None:
    """``pricer train``, ``pricer evaluate`` and ``pricer predict``."""
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
    add_columns_flags(p)
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
    add_columns_flags(p)
    _add_levels(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_predict)
