"""Peak-memory estimate of a LoRA fine-tune, made before any weight is loaded.

`plan_step` turns it into how a trial runs a step inside its memory budget (the whole batch at once,
smaller micro-batches, or gradient checkpointing as the last resort); a sweep prunes a configuration
no plan fits, with the reason. The trial logs the estimate beside the measured peak so it can be
checked. The constants were fitted to the reference runs measured on one H100
(issue 6: Llama-3.1-8B 14.1/36.6 GiB with/without checkpointing, Qwen2.5-7B 14.5, Gemma-2-2B
14.9/27.4, batch 16 x 182 tokens); the estimate lands within ~10 % of each.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from pricer.errors import PricerError
from pricer.machine import GIB
from pricer.model.shapes import ATTENTION_MODULES, ModelShape

BUDGET_ENV = "PRICER_MEMORY_GIB"

# Bytes of saved activations per token per layer, per unit of hidden and intermediate width
# (bf16 copies of the inputs of every projection, norms in fp32, the MLP's gate/up/act tensors).
ACT_BYTES_PER_HIDDEN = 32
ACT_BYTES_PER_INTERMEDIATE = 10
# bf16 logits + their fp32 upcast for the loss + the fp32 gradient; soft-capping adds one more copy.
LOGIT_BYTES = 10
SOFTCAP_LOGIT_BYTES = 4
# fp32 LoRA weight + gradient + two AdamW moments.
LORA_BYTES_PER_PARAM = 16
# 4-bit weights plus double-quantized block constants (~0.13 bit a weight).
NF4_BYTES_PER_PARAM = 0.5 + 0.13 / 8
# CUDA context / torch runtime, and allocator fragmentation on top of the tensors.
RUNTIME_GIB = 1.0
FRAGMENTATION = 1.15
# Tokens of an answer like "123.00" plus the end of turn: what price-only logits are computed for.
PRICE_TOKENS = 6
# A CPU step holds more than the GPU fit above: the peak RSS of 2-step fine-tunes on a 2-core CPU
# with AVX512-bf16 against this estimate put its activations at 1.25x (SmolLM2, q/k/v/o, batch
# 16) and 1.77-1.84x with every linear layer adapted (Gemma 3 270M at batch 16, 181 and 300 tokens;
# SmolLM2 at batch 8, 325 tokens); with these factors the four land within 4 %, and two runs
# measured after within 8 % (tests/model/test_memory.py, docs/results.md#memory-on-a-cpu).
CPU_ACTIVATION_FACTOR = {"attention": 1.3, "all-linear": 1.85}



@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training step, by part, in GiB."""

    weights: float
    lora_and_optimizer: float
    activations: float
    logits: float
    runtime: float
    total: float

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_training_memory(
    shape: ModelShape,
    *,
    batch_size: int,
    seq_len: int,
    lora_r: int,
    target_modules: str = "attention",
    quantization: str = "nf4",
    gradient_checkpointing: bool = False,
    price_only_logits: bool = True,
    compute_bytes: int = 2,
    cpu: bool = False,
) -> MemoryEstimate:
    """Estimate the peak memory of a LoRA training step.

    Args:
        shape: the model's architecture (`pricer.model.shapes`).
        seq_len: tokens per example (prompt + answer).
        target_modules: "attention" (q/k/v/o) or "all-linear".
        quantization: "nf4" (4-bit base) or "none" (bf16 base).
        price_only_logits: logits only at the price tokens (the fast path) instead of every position.
        compute_bytes: 2 for bf16 compute; 4 for fp32 (a CPU without native bf16) doubles the activations.
        cpu: the step runs on a CPU, whose activations are scaled by `CPU_ACTIVATION_FACTOR`.
    """
    weight_bytes = NF4_BYTES_PER_PARAM if quantization == "nf4" else 2
    weights = shape.linear_params * weight_bytes + shape.embedding_params * 2

    dims = shape.module_dims()
    names = ATTENTION_MODULES if target_modules == "attention" else tuple(dims)
    lora_params = shape.layers * sum(lora_r * (dims[n][0] + dims[n][1]) for n in names)
    lora = lora_params * LORA_BYTES_PER_PARAM

    tokens = batch_size * seq_len
    widen = compute_bytes / 2
    per_layer = tokens * widen * (ACT_BYTES_PER_HIDDEN * shape.hidden
                                  + ACT_BYTES_PER_INTERMEDIATE * shape.intermediate)
    if gradient_checkpointing:
        # Only each layer's input is kept; one layer at a time is recomputed in full.
        activations = shape.layers * tokens * shape.hidden * compute_bytes + per_layer
    else:
        activations = shape.layers * per_layer
    if cpu:
        activations *= CPU_ACTIVATION_FACTOR[target_modules]

    logit_positions = batch_size * PRICE_TOKENS if price_only_logits else tokens
    logit_bytes = LOGIT_BYTES + (SOFTCAP_LOGIT_BYTES if shape.softcap else 0)
    logits = logit_positions * shape.vocab * logit_bytes

    parts = [weights / GIB, lora / GIB, activations / GIB, logits / GIB, RUNTIME_GIB]
    total = sum(parts) * FRAGMENTATION
    return MemoryEstimate(*(round(p, 3) for p in parts), total=round(total, 3))


@dataclass(frozen=True)
class StepPlan:
    """How a training step of ``batch_size`` rows runs inside a memory budget.

    Args:
        micro_batch_size: rows per forward/backward; the step's loss and gradients are the same
            for any split (`pricer.train.step.train_step` weights each part by its price tokens).
        gradient_checkpointing: recompute activations in the backward (only when one row
            doesn't fit without it).
        fits: False when not even one row with checkpointing fits; the estimate is then that one's.
    """

    micro_batch_size: int
    gradient_checkpointing: bool
    estimate: MemoryEstimate
    budget_gib: float
    fits: bool

    def describe(self) -> str:
        how = f"micro-batch {self.micro_batch_size}"
        if self.gradient_checkpointing:
            how += ", gradient checkpointing"
        return (f"{how}: estimated peak {self.estimate.total:.2f} GiB (weights {self.estimate.weights:.2f}, "
                f"activations {self.estimate.activations:.2f}, logits {self.estimate.logits:.2f}) "
                f"{'fits' if self.fits else 'exceeds'} the {self.budget_gib:.2f} GiB budget")


def plan_step(shape: ModelShape, *, batch_size: int, seq_len: int, lora_r: int, budget_gib: float,
              target_modules: str = "attention", quantization: str = "nf4", compute_bytes: int = 2,
              micro_batch_size: int | None = None, cpu: bool = False) -> StepPlan:
    """The fastest way to run a step within `budget_gib`, as the estimate sees it.

    The whole batch at once if it fits; else the largest micro-batch that does (halving), since a
    split costs little (a 16-row SmolLM2 step in 4 parts of 4: 10 % slower on a CPU, a third of
    the memory) while gradient checkpointing recomputes every layer's forward (about a third more
    compute). Checkpointing comes in only when a single row doesn't fit without it.

    Args:
        micro_batch_size: a split chosen by hand: the plan is that one, without checkpointing,
            and `fits` says whether the estimate allows it.
    """
    if micro_batch_size is not None:
        size = min(micro_batch_size, batch_size)
        estimate = estimate_training_memory(
            shape, batch_size=size, seq_len=seq_len, lora_r=lora_r, target_modules=target_modules,
            quantization=quantization, compute_bytes=compute_bytes, cpu=cpu)
        return StepPlan(size, False, estimate, budget_gib, fits=estimate.total <= budget_gib)
    sizes = sorted({-(-batch_size // 2**k) for k in range(batch_size.bit_length() + 1)}, reverse=True)
    estimate = None
    for checkpointing in (False, True):
        for size in sizes:
            estimate = estimate_training_memory(
                shape, batch_size=size, seq_len=seq_len, lora_r=lora_r, target_modules=target_modules,
                quantization=quantization, gradient_checkpointing=checkpointing, compute_bytes=compute_bytes,
                cpu=cpu)
            if estimate.total <= budget_gib:
                return StepPlan(size, checkpointing, estimate, budget_gib, fits=True)
    return StepPlan(1, True, estimate, budget_gib, fits=False)


def budget_gib() -> float:
    """The memory one trial may use: ``$PRICER_MEMORY_GIB`` (a share of a host that other jobs
    use), else what the device has free."""
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


def available_memory_gib(device: str | None = None) -> float:
    """Memory a trial may use: free GPU memory on CUDA, else available host memory."""
    import torch

    if (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda"):
        free, _total = torch.cuda.mem_get_info()
        return free / GIB
    try:
        import psutil

        return psutil.virtual_memory().available / GIB
    except ImportError:  # psutil is a dependency; this keeps a bare notebook working on Linux
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB


def peak_memory_gib() -> float:
    """Peak memory so far in this process: CUDA's max allocated, else the host's peak RSS."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB
