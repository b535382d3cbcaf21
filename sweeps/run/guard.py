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

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.model.memory import BUDGET_ENV, GIB, MemoryEstimate, budget_gib
from pricer.model.shapes import SHAPES, ModelShape

if TYPE_CHECKING:
    from pricer.model.catalog import ModelSpec
    from pricer.train.config import TrainConfig

# `pricer.model.prompts.template_tokens` of the catalog's tokenizers, at most: what the guard assumes
# for a model whose tokenizer is not on this machine yet (a hub entry before its first download).
PROMPT_TOKENS = 64
# how a RuntimeError says that an allocation failed (`out_of_memory`); a thread that can't
# start is one whose stack the cap refused
ALLOCATION_FAILURES = ("cannot allocate memory", "can't allocate memory", "could not create a primitive",
                       "can't start new thread")


@dataclass(frozen=True)
class MemoryCheck:
    """Whether a trial's step plan fits the budget (both in GiB; estimate None = unknown shape)."""

    estimate: MemoryEstimate | None
    budget_gib: float
    reason: str
    fits: bool = True


def local_folder(spec: ModelSpec) -> Path | None:
    """The entry's model folder if it is already on this machine (a local source, or a copy the
    catalog converted or built into its cache), without fetching anything."""
    from pricer.model.weights import cache_root

    for folder in (Path(spec.source).expanduser(), cache_root() / "models" / spec.name):
        if (folder / "config.json").is_file():
            return folder
    return None


def shape_of(spec: ModelSpec) -> ModelShape | None:
    """The architecture of a catalog entry without loading or downloading anything: the published
    shapes, else the ``config.json`` of a local folder or of an already converted/cached copy."""
    if spec.name in SHAPES:
        return SHAPES[spec.name]
    folder = local_folder(spec)
    if folder is None:
        return None
    from transformers import AutoConfig

    try:
        return ModelShape.from_config(AutoConfig.from_pretrained(folder))
    except (ValueError, KeyError, AttributeError, json.JSONDecodeError):
        return None


def sequence_length(config: TrainConfig, spec: ModelSpec) -> int:
    """The prompt length the trial will plan with (`pricer.train.loop.sequence_length`), from the
    entry's tokenizer when it is on this machine, else the text budget plus `PROMPT_TOKENS`."""
    from pricer.model.prompts import NEIGHBOR_LINE_TOKENS

    folder = local_folder(spec)
    if folder is None:
        return config.max_tokens + PROMPT_TOKENS + config.neighbors * NEIGHBOR_LINE_TOKENS
    return config.max_tokens + _template_tokens(spec, folder, config.neighbors)


@functools.lru_cache(maxsize=64)
def _template_tokens(spec: ModelSpec, folder: Path, neighbors: int) -> int:
    """The template's tokens around a prompt (neighbour lines included), once per model and worker:
    loading a tokenizer for every trial cost the worker seconds of CPU a trial (a tokenizer does not
    change under it)."""
    from pricer.model.loading import load_tokenizer
    from pricer.model.prompts import template_tokens

    return template_tokens(load_tokenizer(spec, folder), chat=spec.chat, neighbors=neighbors)


def check(config: TrainConfig, spec: ModelSpec, budget: float | None = None) -> MemoryCheck:
    """Plan a trial's step (`pricer.train.loop.plan_for`) and tell whether any plan fits the budget
    (`budget_gib` by default)."""
    from pricer.model.loading import compute_dtype, pick_device
    from pricer.train.loop import plan_for

    budget = budget_gib() if budget is None else budget
    shape = shape_of(spec)
    if shape is None:
        return MemoryCheck(None, budget, f"{spec.name}: shape unknown before loading; not checked")
    seq_len = sequence_length(config, spec)
    device = pick_device()
    plan = plan_for(config, shape, budget_gib=budget, seq_len=seq_len, compute_bytes=compute_dtype(device).itemsize,
                    cpu=device.type == "cpu")
    reason = (f"memory guard: {spec.name} at batch {config.batch_size} x ~{seq_len} "
              f"tokens, LoRA r{config.lora_r} {config.target_modules}, {plan.describe()}")
    return MemoryCheck(plan.estimate, budget, reason, fits=plan.fits)


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
    # the OpenMP threads start now, their stacks mapped before the cap: libgomp ends the whole
    # process (exit 1, no reason sent) when it can't start a thread
    torch.ones(1 << 16).add_(1)
    limit = int(budget_gib() * GIB)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def out_of_memory(exc: BaseException) -> bool:
    """Whether a trial's error is an allocation its cap refused: a MemoryError, or a RuntimeError
    that says so in words only (torch's allocator, a safetensors mmap, oneDNN, whose only words are
    that it could not create a primitive, and Python's threading)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(words in text for words in ALLOCATION_FAILURES))
