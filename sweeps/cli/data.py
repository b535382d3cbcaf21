"""`pricer data build` and `pricer baselines`: curate sources into a dataset, score the classical
baselines on it."""

from __future__ import annotations

import argparse
from pathlib import Path

from pricer.errors import SpecError
from sweeps.cli.flags import add_columns_flags, add_json_flag, columns_from_flags
from sweeps.cli.output import print_json, print_table, wide_console


def cmd_data_build(args: argparse.Namespace) -> int:
    from pricer.data.dataset import build

    report = build(args.source, args.out, limit=args.limit, seed=args.seed, balance=args.balance,
                   sampling=_sampling(args), workers=args.workers, columns=columns_from_flags(args))
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


def add_data_parsers(sub: argparse._SubParsersAction) -> None:
    """``pricer data build`` and ``pricer baselines``."""
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
    add_columns_flags(p)
    p.set_defaults(func=cmd_data_build)

    p = sub.add_parser("baselines", help="score classical baselines")
    p.add_argument("--data", required=True, help="built dataset DIR or a jsonl")
    p.add_argument("--test", default=None, help="score on this items file instead of the test split")
    add_json_flag(p)
    p.set_defaults(func=cmd_baselines)
