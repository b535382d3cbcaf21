"""`pricer bench neighbors --items N`: build and query the neighbour index of N generated items."""

from __future__ import annotations

import argparse

from pricer.errors import SpecError
from sweeps.cli.output import print_json, print_table


def cmd_bench_neighbors(args: argparse.Namespace) -> int:
    from pricer.bench.data import DEFAULT_SAMPLE
    from pricer.bench.neighbors import bench_neighbors

    try:
        n = int(args.items) if args.items is not None else None
    except ValueError:
        n = None
    if len(args.target) != 1 or n is None:
        raise SpecError("usage: pricer bench neighbors --items N [--sample ITEMS.jsonl] [--json]")
    r = bench_neighbors(n, sample=args.sample or DEFAULT_SAMPLE)
    if args.json:
        print_json(r)
        return 0
    print_table(f"neighbour index of {r['items']:,} generated items ({r['nonzeros']:,} non-zeros, "
                f"{r['index_gib']:.2f} GiB)",
                ("stage", "seconds", "per second", "peak RSS GiB"),
                [("items made", "", "", f"{r['peak_rss_gib_items']:.2f}"),
                 ("build", f"{r['build_s']:,.1f}", f"{r['items_per_s']:,.0f} items", f"{r['peak_rss_gib_build']:.2f}"),
                 (f"query {r['queries']} x k={r['k']}", f"{r['query_s']:,.1f}", f"{r['queries_per_s']:,.1f} queries",
                  f"{r['peak_rss_gib_query']:.2f}")])
    print("peak RSS: the bench process's, the generated items included; the index adds the difference")
    return 0
