"""`pricer bench neighbors --items N`: build and query the neighbour index of N generated items."""

from __future__ import annotations

import argparse
from pathlib import Path

from sweeps.cli.flags import add_json_flag
from sweeps.cli.output import print_json, print_table


def cmd_bench_neighbors(args: argparse.Namespace) -> int:
    from pricer.bench.neighbors import bench_neighbors
    from pricer.data.sources import sample_path

    r = bench_neighbors(args.items, sample=args.sample or sample_path(), queries=args.queries)
    if args.json:
        print_json(r)
        return 0
    print_table(f"neighbour index of {r['items']:,} generated items ({r['nonzeros']:,} non-zeros, "
                f"{r['index_gib']:.2f} GiB)",
                ("stage", "seconds", "per second", "peak RSS GiB"),
                [("items made", "", "", f"{r['peak_rss_gib_items']:.2f}"),
                 ("build", f"{r['build_s']:,.1f}", f"{r['items_per_s']:,.0f} items", f"{r['peak_rss_gib_build']:.2f}"),
                 ("per-term matrix (first query)", f"{r['postings_s']:,.1f}", "", ""),
                 (f"query {r['queries']} x k={r['k']}", f"{r['query_s']:,.1f}", f"{r['queries_per_s']:,.1f} queries",
                  f"{r['peak_rss_gib_query']:.2f}"),
                 (f"reference: scipy product + dense top-k, {r['reference_queries']} queries", "",
                  f"{r['reference_queries_per_s']:,.1f} queries", "")])
    print(f"top-k queries: {r['speedup_vs_reference']:.1f}x the reference's speed on the same queries")
    print("peak RSS: the bench process's, the generated items included; the index adds the difference")
    return 0


def add_bench_neighbors_parser(targets: argparse._SubParsersAction) -> None:
    from pricer.bench.neighbors import QUERIES

    p = targets.add_parser("neighbors", help="the neighbour index of N generated items: build and query speed, "
                                             "peak memory")
    p.add_argument("--items", type=int, required=True, help="train items the index holds (the recipe: ~320000)")
    p.add_argument("--queries", type=int, default=QUERIES, help="queries timed, as one batch")
    p.add_argument("--sample", type=Path, default=None,
                   help="curated items the generated ones are made from (default: the shared sample)")
    add_json_flag(p)
    p.set_defaults(func=cmd_bench_neighbors)
