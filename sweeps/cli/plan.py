"""`pricer plan STUDY.yaml`: memory per batch size, tokens and hours per trial, and the study's
total, before anything is launched (`sweeps.run.plan`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pricer.errors import SpecError
from sweeps.cli.output import print_json, print_table, wide_console


def _per_model(text: str | None, flag: str, models: list[str]) -> dict[str, float]:
    """``N`` (every model) or ``model=N,model=N``."""
    if not text:
        return {}
    out = {}
    try:
        for part in text.split(","):
            name, _, value = part.rpartition("=")
            for model in ([name.strip()] if name else models):
                out[model] = float(value)
    except ValueError:
        raise SpecError(f"{flag}: a number, or model=number pairs separated by commas (got {text!r})") from None
    unknown = sorted(set(out) - set(models))
    if unknown:
        raise SpecError(f"{flag}: {', '.join(unknown)} not in the study's models ({', '.join(models)})")
    if any(v <= 0 for v in out.values()):
        raise SpecError(f"{flag}: figures must be > 0 (got {text!r})")
    return out


def cmd_plan(args: argparse.Namespace) -> int:
    from sweeps.run.plan import models_of, plan_study
    from sweeps.spec.study import load_study

    spec = load_study(args.study)
    if args.gpu_gib <= 0:
        raise SpecError(f"--gpu-gib: must be > 0 (got {args.gpu_gib})")
    models = models_of(spec)
    tokens = _per_model(args.tokens_per_s, "--tokens-per-s", models)
    items = _per_model(args.items_per_s, "--items-per-s", models)
    if set(items) - set(tokens):
        raise SpecError("--items-per-s: give --tokens-per-s for the same models")
    throughput = {m: (tokens[m], items.get(m)) for m in tokens}
    plan = plan_study(spec, gpu_gib=args.gpu_gib, gpu=args.gpu, throughput=throughput, train_items=args.train_items)
    if args.json:
        print_json({**dataclasses.asdict(plan), "search_hours": plan.search_hours, "refit_hours": plan.refit_hours})
        return 0
    print_plan(plan)
    return 0


def print_plan(plan) -> None:
    console = wide_console()
    batches = sorted({b for m in plan.models for b in m.peaks})
    print_table(f"{plan.study}: memory of a step (estimate) against {plan.gpu_gib:g} GiB, "
                f"~{plan.tokens_per_item:.0f} tokens a prompt, the largest LoRA rank searched",
                ("model", "params B", "4-bit weights GiB", *(f"batch {b}: peak GiB" for b in batches)),
                [(m.model, f"{m.params_b:.2f}" if m.params_b else "?",
                  f"{m.weights_gib:.2f}" if m.weights_gib is not None else "?",
                  *(f"{m.peaks[b][0]:.1f} ({m.peaks[b][1]})" if b in m.peaks else "" for b in batches))
                 for m in plan.models], console=console)
    headers = ("model", "train tokens/trial", "eval items/trial", "train tok/s", "eval items/s", "h/trial",
               "min/trial by batch", "h/refit", "throughput from")
    print_table(f"time per trial: {plan.train_items:,} train items ({plan.train_items_source}); "
                "every trial run to its end", headers,
                [(m.model, f"{m.tokens_per_trial:,.0f}", f"{m.eval_items_per_trial:,.0f}",
                  f"{m.throughput.train_tokens_per_s:,.0f}", f"{m.throughput.eval_items_per_s:,.2f}",
                  f"{m.hours_per_trial:.2f}", ", ".join(f"{b}: {60 * h:,.1f}" for b, h in m.hours_by_batch.items()),
                  f"{m.refit_hours:.2f}" if plan.refit_trials else "", m.throughput.source) for m in plan.models],
                console=console, left=(0, len(headers) - 1))
    total = plan.search_hours + plan.refit_hours
    console.print(f"study total: {plan.search_trials} search trials {plan.search_hours:,.1f} h + "
                  f"{plan.refit_trials} refits {plan.refit_hours:,.1f} h = {total:,.1f} device-hours "
                  f"({total / 24:,.1f} days on one device; models drawn evenly)")


def add_plan_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="memory, tokens and hours a study will take, before launching it")
    p.add_argument("study", type=Path, help="the study file to plan, e.g. studies/pricer-8b.yaml")
    p.add_argument("--gpu-gib", type=float, default=80.0, help="memory one trial may use (one GPU's; default 80)")
    p.add_argument("--gpu", default="h100", help="the GPU of the FLOPs estimate (h100, h200, a100, l40s, l4, cpu) "
                                                 "for models without --tokens-per-s")
    p.add_argument("--tokens-per-s", default=None, metavar="N|MODEL=N,...",
                   help="measured train tokens/s (`pricer bench`'s trial path), for all models or per model")
    p.add_argument("--items-per-s", default=None, metavar="N|MODEL=N,...",
                   help="measured eval items/s (`pricer bench`); default: derived from --tokens-per-s")
    p.add_argument("--train-items", type=int, default=None,
                   help="curated train items, when the study's data is not built yet")
    p.add_argument("--json", action="store_true", help="print JSON on one line instead of tables")
    p.set_defaults(func=cmd_plan)
