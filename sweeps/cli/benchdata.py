"""`pricer bench data --lines N`: curation with one worker against all, lines/s and peak memory."""

from __future__ import annotations

import argparse
from pathlib import Path

from pricer.errors import SpecError
from sweeps.cli.output import print_json, print_table, wide_console


def cmd_bench_data(args: argparse.Namespace) -> int:
    from pricer.bench.data import DEFAULT_SAMPLE, bench_data

    workers = _workers(args.workers)
    result = bench_data(args.sample or DEFAULT_SAMPLE, args.lines, workers=workers, folder=args.dir)
    if args.json:
        print_json(result)
        return 0
    print_table(f"curating {result['lines']:,} raw lines ({result['bytes'] / 2**20:,.0f} MiB in "
                f"{len(result['files'])} files) on {result['cores']} cores",
                ("workers", "seconds", "lines/s", "CPU s", "lines/CPU s", "peak RSS GiB", "less shared",
                 "speed vs first", "memory vs first", "kept"),
                [(str(run["workers"]), f"{run['seconds']:,.1f}", f"{run['lines_per_s']:,.0f}",
                  f"{run['cpu_seconds']:,.1f}", f"{run['lines_per_cpu_s']:,.0f}", f"{run['peak_rss_gib']:.2f}",
                  f"{run['peak_anonymous_gib']:.2f}", f"{run['speed_vs_first']:.2f}x",
                  f"{run['memory_vs_first']:.2f}x" if run["memory_vs_first"] else "n/a", f"{run['kept']:,}")
                 for run in result["runs"]], console=wide_console())
    print("peak RSS: the build's whole process tree (parent + workers), sampled every 50 ms; less shared: without "
          "file-backed pages (the memory-mapped split being saved); CPU s: user + system seconds of the tree "
          "(a loaded machine stretches wall time, not these)")
    return 0


def _workers(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        counts = tuple(int(w) for w in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise SpecError(f"--workers: worker counts >= 1, comma-separated, e.g. 1,2 (got {text!r})")
    return counts


def add_bench_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lines", type=int, required=True, help="raw lines to write and curate")
    p.add_argument("--workers", default=None, help="worker counts to compare, e.g. 1,2 (unset: 1 and all cores)")
    p.add_argument("--sample", type=Path, default=None,
                   help="curated items the raw lines are made from (default: the shared sample)")
    p.add_argument("--dir", type=Path, default=None,
                   help="keep the raw lines here and reuse them (default: a temporary folder)")
