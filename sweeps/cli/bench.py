"""The `pricer bench ...` and `pricer gpu-check` commands: measurements printed as ratios against
a reference run in the same process (the recipe's path, greedy decoding, the search's arms)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pricer.bench.gpucheck import SHAPE_NAMES
from sweeps.cli.benchdata import add_bench_data_args, cmd_bench_data
from sweeps.cli.benchfaults import add_bench_faults_args, cmd_bench_faults
from sweeps.cli.benchfleet import add_bench_fleet_args, cmd_bench_fleet
from sweeps.cli.benchneighbors import add_bench_neighbors_parser
from sweeps.cli.fidelity import add_fidelity_flags, cmd_bench_fidelity
from sweeps.cli.flags import add_json_flag
from sweeps.cli.output import print_json, print_table

EVAL_ITEMS = 48  # items `pricer bench` predicts on each path


def cmd_bench_sweep(args: argparse.Namespace) -> int:
    from sweeps.bench.benchsweep import run_sweep_bench, scaled
    from sweeps.spec.study import load_study

    spec = scaled(load_study(args.study), n_trials=args.n_trials, max_steps=args.max_steps,
                  eval_items=args.eval_items, test_items=args.test_items)
    out = args.out or Path(spec.workdir) / "bench-sweep"
    result = run_sweep_bench(spec, Path(out))
    if args.json:
        print_json(result)
        return 0
    search_seconds = result["arms"][0]["trial_seconds"] or 1.0
    console = print_table(
        f"bench sweep of {spec.name} (folders under {out})",
        ("arm", "trials", "pruned", "trial-seconds", "compute vs search", "best trial", "best val $ error",
         "best test $ error"),
        [(arm["name"], str(arm["trials"]), str(arm["pruned"]), f"{arm['trial_seconds']:,.0f}",
          f"{arm['trial_seconds'] / search_seconds:.2f}x", str(arm["best_trial"]),
          f"{arm['best_val_mae'] or float('nan'):,.2f}", f"{arm['best_test_mae'] or float('nan'):,.2f}")
         for arm in result["arms"]])
    d, r = result["default"], result["ratios"]
    console.print(f"enqueued default (trial 0, {d['state']}): test $ error {d['test_mae'] or float('nan'):,.2f}; "
                  f"the default alone ran {d['scaled_steps']} steps")
    for name, value in r.items():
        console.print(f"{name}: {'n/a' if value is None else f'{value:.2f}x'}")
    rho = result["rank_correlation_first_vs_final_validation"]
    console.print(f"rank correlation, first vs final validation (no pruning arm): "
                  f"{'n/a (fewer than 3 trials)' if rho is None else f'{rho:.2f}'}")
    return 0


def cmd_bench_decode(args: argparse.Namespace) -> int:
    from pricer.bench.decode import bench_decode
    from pricer.data.dataset import load_items

    items = load_items(args.items)[:args.limit]
    result = bench_decode(args.folder, items)
    if args.json:
        print_json(result)
        return 0
    rows = []
    for name in ("greedy", "median"):
        r = result[name]
        rows.append((name, f"{r['mae']:,.2f}", f"{r['rmsle']:.3f}", f"{100 * r['hit_rate']:.1f}", str(r["misses"]),
                     f"{r['seconds']:.1f}"))
    ratios = result["ratios"]
    rows.append(("median / greedy", f"{ratios['mae']:.2f}x", f"{ratios['rmsle']:.2f}x", "", "",
                 f"{ratios['seconds']:.2f}x"))
    print_table(f"greedy vs median decoding of {args.folder} on {len(items)} items of {args.items}",
                ("decode", "$ error", "RMSLE", "hits %", "misses", "seconds"), rows)
    return 0


def cmd_bench_speed(args: argparse.Namespace) -> int:
    from pricer.bench.speed import BenchSettings, run_bench

    settings = BenchSettings(batch_size=args.batch_size, max_tokens=args.max_tokens,
                             eval_items=args.eval_items, layers=args.layers)
    result = run_bench(args.model, args.steps, args.shape, data=args.data, settings=settings)
    if args.json:
        print_json(result.to_json())
        return 0
    ratios = result.ratios()
    s = result.settings
    console = print_table(
        f"{result.notes['model']} on {result.device} ({result.dtype}): {s.steps} steps of "
        f"{s.batch_size} x {s.max_tokens} tokens, {s.eval_items} items predicted",
        ("", "project", "recipe", "project / recipe"),
        [("train tokens/s", f"{result.train_tokens_per_s:,.1f}", f"{result.train_tokens_per_s_ref:,.1f}",
          f"{ratios['train_tokens_per_s']:.2f}x"),
         ("eval items/s", f"{result.eval_items_per_s:,.2f}", f"{result.eval_items_per_s_ref:,.2f}",
          f"{ratios['eval_items_per_s']:.2f}x"),
         ("peak memory GiB", f"{result.peak_mem_gib:,.2f}", f"{result.peak_mem_gib_ref:,.2f}",
          f"{ratios['peak_mem_gib']:.2f}x"),
         *([("4-bit load s", f"{result.load_s:,.2f}", f"{result.load_s_ref:,.2f}", f"{ratios['load_s']:.2f}x")]
           if result.load_s is not None else []),
         ("validation $ error", f"{result.mae:,.2f}", f"{result.mae_ref:,.2f}", "")])
    console.print(f"memory: {result.memory_method}")
    console.print(f"project step, with the recipe's peak as its budget: {result.notes['plan']}")
    return 0


def cmd_gpu_check(args: argparse.Namespace) -> int:
    from pricer.bench.gpucheck import CheckSettings, run_gpu_check
    from pricer.bench.speed import BenchSettings

    bench = BenchSettings(steps=args.steps, batch_size=args.batch_size, max_tokens=args.max_tokens,
                          eval_items=args.eval_items, layers=args.layers)
    settings = CheckSettings(bench=bench, shapes=tuple(args.shapes), trial_items=args.eval_items, toy=args.toy)
    table = run_gpu_check(settings, out=args.out, data=args.data)
    rows = [(name, f"{row['train_tokens_per_s']:,.0f}", f"{row['ratios']['train_tokens_per_s']:.2f}",
             f"{row['eval_items_per_s']:,.2f}", f"{row['ratios']['eval_items_per_s']:.2f}",
             f"{row['peak_mem_gib']:,.2f}", f"{row['ratios']['peak_mem_gib']:.2f}", f"{row['seconds']:.0f}")
            for name, row in table["shapes"].items()]
    trial = table["trial"]
    rows.append(("trial step", f"{trial['train_tokens_per_s']:,.0f}", "", "", "", f"{trial['peak_mem_gib']:,.2f}", "",
                 f"{trial['wall_s']:.0f}"))
    console = print_table(f"gpu-check on {table['device']} in {table['total_s']:.0f} s -> {args.out}",
                          ("", "train tok/s", "ratio", "eval items/s", "ratio", "peak GiB", "ratio", "s"), rows,
                          no_wrap={0})
    console.print(f"ratio: project / recipe; trial step: `pricer.train.loop` for one step on {trial['model']}")
    return 0


# `pricer bench` with no target, or with a flag first, is the speed bench (its form before targets)
TARGETS = ("speed", "sweep", "fidelity", "decode", "data", "fleet", "faults", "neighbors")


def with_bench_target(argv: list[str]) -> list[str]:
    """``pricer bench [--flags]`` -> ``pricer bench speed [--flags]`` (help flags excepted)."""
    if argv[:1] == ["bench"] and (len(argv) == 1 or (argv[1].startswith("-") and argv[1] not in ("-h", "--help"))):
        return ["bench", "speed", *argv[1:]]
    return argv


def add_bench_parsers(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="measurements as ratios against a reference in the same process: the "
                                         "trial path against the recipe's (`bench speed`, or plain `bench`), the "
                                         "search's arms, fidelity, decoding, curation, the fleet soak, the fault matrix")
    targets = bench.add_subparsers(dest="bench_cmd", required=True, metavar="TARGET")

    p = targets.add_parser("speed", help="the project's trial path against the recipe's, as ratios (the plain "
                                         "`pricer bench`)")
    p.add_argument("--model", default="smollm2-135m-instruct", help="the catalog model both paths train")
    p.add_argument("--shape", default=None, choices=["llama-3.1-8b", "qwen2.5-7b", "gemma-2-2b"],
                   help="a real model's shape with random weights instead of --model (for a GPU)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps on each path")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per step (the recipe's)")
    p.add_argument("--max-tokens", type=int, default=182, help="prompt + answer tokens (the recipe's)")
    p.add_argument("--eval-items", type=int, default=EVAL_ITEMS, help="validation items each path predicts")
    p.add_argument("--data", default=None, help="built dataset DIR or jsonl (unset: $PRICER_SAMPLE, else "
                   "../shared/data/amazon2023-sample/items.jsonl from the current folder)")
    p.add_argument("--layers", type=int, default=None, help=argparse.SUPPRESS)  # shrinks --shape: CPU checks
    add_json_flag(p)
    p.set_defaults(func=cmd_bench_speed)

    p = targets.add_parser("sweep", help="the search with and without pruning, and the enqueued default alone")
    p.add_argument("study", type=Path, help="the study file, e.g. studies/cpu-search.yaml")
    p.add_argument("--out", type=Path, default=None, help="where the three arms' studies go "
                   "(unset: the study's workdir/bench-sweep)")
    p.add_argument("--n-trials", type=int, default=None, help="each arm's trials (unset: the study's)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="steps per trial, with warm-up, validation and pruning steps scaled alike (unset: the study's)")
    p.add_argument("--eval-items", type=int, default=None, help="validation items per report (unset: the study's)")
    p.add_argument("--test-items", type=int, default=None, help="test items per finished trial (unset: the study's)")
    add_json_flag(p)
    p.set_defaults(func=cmd_bench_sweep)

    p = targets.add_parser("fidelity", help="does a fraction of the data rank configurations like all of it")
    p.add_argument("study", type=Path, help="the study file, e.g. studies/cpu-search.yaml")
    add_fidelity_flags(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_bench_fidelity)

    p = targets.add_parser("decode", help="greedy against median decoding of an exported folder")
    p.add_argument("folder", help="a folder of `pricer train` or `pricer export`")
    p.add_argument("--items", required=True, help="items with prices (jsonl, CSV, Parquet or a built DIR)")
    p.add_argument("--limit", type=int, default=None, help="the first N items (unset: all)")
    add_json_flag(p)
    p.set_defaults(func=cmd_bench_decode)

    p = targets.add_parser("data", help="curation with one worker against all: lines/s and peak memory")
    add_bench_data_args(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_bench_data)

    add_bench_neighbors_parser(targets)

    p = targets.add_parser("fleet", help="N workers, two killed, on one PostgreSQL study (the fleet soak)")
    add_bench_fleet_args(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_bench_fleet)

    p = targets.add_parser("faults", help="a study through each fault: MLflow restarted, PostgreSQL severed, a "
                                          "worker killed, a full disk, a corrupted checkpoint, Ctrl-C thrice")
    add_bench_faults_args(p)
    add_json_flag(p)
    p.set_defaults(func=cmd_bench_faults)

    p = sub.add_parser("gpu-check", help="bench the three real shapes and one trial step on a GPU, as one JSON")
    p.add_argument("--out", type=Path, default=Path("gpu-check.json"),
                   help="the JSON file, rewritten after each measurement")
    p.add_argument("--toy", action="store_true", help="the toy models instead (checks the path on a CPU)")
    p.add_argument("--shapes", nargs="+", default=list(SHAPE_NAMES), choices=SHAPE_NAMES,
                   help="a subset (the first also gets the trial step)")
    p.add_argument("--steps", type=int, default=3, help="timed training steps per shape")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per step (the recipe's)")
    p.add_argument("--max-tokens", type=int, default=182, help="prompt + answer tokens (the recipe's)")
    p.add_argument("--eval-items", type=int, default=16, help="items each path predicts, and the trial evaluates")
    p.add_argument("--data", default=None, help="built dataset DIR or jsonl (unset: $PRICER_SAMPLE, else "
                   "../shared/data/amazon2023-sample/items.jsonl from the current folder)")
    p.add_argument("--layers", type=int, default=None, help=argparse.SUPPRESS)  # shrinks the shapes
    p.set_defaults(func=cmd_gpu_check)
