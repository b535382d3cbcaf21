"""The memory guard: a trial that can't fit is pruned before any weight is loaded.

The estimate (`pricer.memory.estimate_training_memory`) comes from the catalog entry's shape and
the trial's parameters; it is logged as ``estimated_peak_gib`` beside the measured ``peak_mem_gib``
so the estimate can be checked. The budget is the device's free memory, or ``PRICER_MEMORY_GIB``
when set (a share of a host that other jobs use). With ``PRICER_MEMORY_GIB`` set, a CPU trial's
process is also capped at it, so a trial that outgrows its estimate raises MemoryError and fails
alone instead of waking the kernel's OOM killer, which may pick the worker or the database.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.errors import PricerError
from pricer.memory import GIB, MemoryEstimate, available_memory_gib, estimate_training_memory
from pricer.shapes import SHAPES, ModelShape

if TYPE_CHECKING:
    from pricer.catalog import ModelSpec
    from pricer.train import TrainConfig

BUDGET_ENV = "PRICER_MEMORY_GIB"


@dataclass(frozen=True)
class Verdict:
    """Whether a trial's estimated peak fits the budget (both in GiB; estimate None = unknown shape)."""

    estimate: MemoryEstimate | None
    budget_gib: float
    reason: str

    @property
    def fits(self) -> bool:
        return self.estimate is None or self.estimate.total <= self.budget_gib


def budget_gib() -> float:
    """The memory one trial may use: ``$PRICER_MEMORY_GIB``, else what the device has free."""
    raw = os.environ.get(BUDGET_ENV)
    if not raw:
        return available_memory_gib()
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise PricerError(f"{BUDGET_ENV}={raw!r}: must be a number of GiB > 0 (e.g. {BUDGET_ENV}=20)")
    return value


def shape_of(spec: ModelSpec) -> ModelShape | None:
    """The architecture of a catalog entry without loading or downloading anything: the published
    shapes, else the ``config.json`` of a local folder or of an already converted/cached copy."""
    if spec.name in SHAPES:
        return SHAPES[spec.name]
    from pricer.catalog import cache_root

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
    """Estimate a trial's peak memory and compare it with the budget (`budget_gib` by default)."""
    budget = budget_gib() if budget is None else budget
    shape = shape_of(spec)
    if shape is None:
        return Verdict(None, budget, f"{spec.name}: shape unknown before loading; not checked")
    estimate = estimate_training_memory(
        shape, batch_size=config.batch_size, seq_len=config.max_tokens, lora_r=config.lora_r,
        target_modules=config.target_modules, quantization=config.quantization)
    reason = (f"memory guard: estimated peak {estimate.total:.2f} GiB (weights {estimate.weights:.2f}, "
              f"activations {estimate.activations:.2f}, logits {estimate.logits:.2f}) "
              f"{'fits' if estimate.total <= budget else 'exceeds'} the {budget:.2f} GiB budget "
              f"for {spec.name} at batch {config.batch_size} x {config.max_tokens} tokens, "
              f"LoRA r{config.lora_r} {config.target_modules}")
    return Verdict(estimate, budget, reason)


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
