"""The memory guard: a trial that can't fit is pruned before any weight is loaded.

The plan (`pricer.model.memory.plan_step`: whole batch, smaller micro-batches, then gradient
checkpointing) comes from the catalog entry's shape and the trial's parameters; a trial no plan
fits is pruned. Its estimate is logged as ``estimated_peak_gib`` beside the measured
``peak_mem_gib`` so the estimate can be checked. The budget is the device's free memory, or
``PRICER_MEMORY_GIB`` when set (a share of a host that other jobs use). With ``PRICER_MEMORY_GIB`` set, a CPU trial's
process is also capped at it, so a trial that outgrows its estimate raises MemoryError and fails
alone instead of waking the kernel's OOM killer, which may pick the worker or the database.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.model.memory import BUDGET_ENV, GIB, MemoryEstimate, budget_gib
from pricer.model.shapes import SHAPES, ModelShape

if TYPE_CHECKING:
    from pricer.model.catalog import ModelSpec
    from pricer.train.loop import TrainConfig

# `pricer.model.prompts.template_tokens` of the catalog's tokenizers, at most: the guard plans before
# any tokenizer is loaded.
PROMPT_TOKENS = 64


@dataclass(frozen=True)
class Verdict:
    """Whether a trial's step plan fits the budget (both in GiB; estimate None = unknown shape)."""

    estimate: MemoryEstimate | None
    budget_gib: float
    reason: str
    fits: bool = True


def shape_of(spec: ModelSpec) -> ModelShape | None:
    """The architecture of a catalog entry without loading or downloading anything: the published
    shapes, else the ``config.json`` of a local folder or of an already converted/cached copy."""
    if spec.name in SHAPES:
        return SHAPES[spec.name]
    from pricer.model.catalog import cache_root

    for folder in (Path(spec.source).expanduser(), cache_root() / "models" / spec.name):
        config = folder / "config.json"
        if config.is_file():
            from transformers import AutoConfig

            try:
                return ModelShape.from_config(AutoConfig.from_pretrained(folder))
            except (ValueError, KeyError, AttributeError, json.JSONDecodeError):
                return None
    return None


def check(config: TrainConfig, spec: ModelSpec, budget: float | None = None) -> Verdict:
    """Plan a trial's step (`pricer.train.loop.plan_for`) and tell whether any plan fits the budget
    (`budget_gib` by default)."""
    from pricer.model.loading import compute_dtype, pick_device
    from pricer.train.loop import plan_for

    budget = budget_gib() if budget is None else budget
    shape = shape_of(spec)
    if shape is None:
        return Verdict(None, budget, f"{spec.name}: shape unknown before loading; not checked")
    plan = plan_for(config, shape, budget_gib=budget, seq_len=config.max_tokens + PROMPT_TOKENS,
                     compute_bytes=compute_dtype(pick_device()).itemsize)
    reason = (f"memory guard: {spec.name} at batch {config.batch_size} x ~{config.max_tokens + PROMPT_TOKENS} "
              f"tokens, LoRA r{config.lora_r} {config.target_modules}, {plan.describe()}")
    return Verdict(plan.estimate, budget, reason, fits=plan.fits)


def cap_process() -> None:
    """In a trial process: with ``$PRICER_MEMORY_GIB`` set and no GPU, cap the process's data
    memory at it (RLIMIT_DATA counts heap and private mappings, not the shared libraries)."""
    raw = os.environ.get(BUDGET_ENV)
    if not raw:
        return
    import resource

    import torch

    if torch.cuda.is_available():
        return  # the budget is GPU memory there; the host's is not ours to cap
    limit = int(budget_gib() * GIB)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def rss_gib() -> float:
    """This process's resident memory now (a worker's, measured after each trial)."""
    import psutil

    return psutil.Process().memory_info().rss / GIB
