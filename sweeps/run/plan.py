"""`pricer plan STUDY.yaml`: what a study will cost before it is launched.

Per model in the space: the 4-bit weights and the estimated peak memory of a step at each batch
size (`pricer.model.memory.plan_step`, the estimator trials are guarded with) and whether it fits
the GPU; tokens per trial; hours per trial; and the study's total (search plus refit).

Time per trial = training tokens / train tokens/s + evaluated items / eval items/s + loading.
Throughput comes, per model, from a figure given (`pricer bench` on the machine the study will
run on prints both), else from a FLOPs estimate for a named GPU: ``6 * params * tokens /
(peak * MFU)`` for training, ``2 * params * tokens * DECODE_OVERHEAD / (peak * MFU)`` for an
evaluated item. The FLOPs estimate is a rough one (QLoRA dequantizes every weight each step:
MFU is low, `MFU` below) and says so in its output. Every trial is planned to its end: pruning only
lowers the total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean

from pricer.errors import SpecError
from pricer.model.memory import estimate_training_memory, plan_step
from sweeps.run.guard import PROMPT_TOKENS, shape_of
from sweeps.spec.study import ParamSpec, StudySpec

# Dense bf16 peak FLOP/s (vendor datasheets, without sparsity), and 2 cores of the CPU in WORLD.md.
PEAK_FLOPS = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "l40s": 362e12, "l4": 121e12, "cpu": 0.42e12}
# Model FLOPs utilisation of a 4-bit LoRA step: every weight is dequantized each step and most of the
# backward is spent on activations, so it sits well below full fine-tuning's 40-50 %.
MFU = 0.25
# An evaluated item: its prompt once, then a few digits decoded one token at a time (memory-bound).
DECODE_OVERHEAD = 3.0
# Median decoding reads the price distribution by a tree of digits: 1.58x greedy's time (README,
# 200 Gemma items on 2 cores).
MEDIAN_COST = 1.58
# Loading the 4-bit base and the data, per trial (measured: tens of seconds on 2 cores for the tiny
# models; a minute or two for an 8B base from a local cache).
LOAD_S = {"cpu": 30.0, "gpu": 90.0}
# Curated product texts run ~4 characters per token (both tiny tokenizers on the sample).
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class Throughput:
    """Train tokens/s and evaluated items/s of one model, and where the figures come from."""

    train_tokens_per_s: float
    eval_items_per_s: float
    source: str


@dataclass(frozen=True)
class ModelPlan:
    model: str
    params_b: float | None
    weights_gib: float | None
    peaks: dict[int, tuple[float, str]]  # batch size -> (whole-batch peak GiB, how the step runs)
    tokens_per_trial: float
    eval_items_per_trial: float
    hours_per_trial: float
    hours_by_batch: dict[int, float]  # a trial's hours at each searched batch size
    refit_hours: float
    throughput: Throughput


@dataclass(frozen=True)
class StudyPlan:
    study: str
    gpu_gib: float
    train_items: int
    train_items_source: str
    tokens_per_item: float
    models: list[ModelPlan] = field(default_factory=list)
    search_trials: int = 0
    refit_trials: int = 0

    @property
    def search_hours(self) -> float:
        """Every search trial's expected hours, the models drawn evenly."""
        return self.search_trials * mean(m.hours_per_trial for m in self.models)

    @property
    def refit_hours(self) -> float:
        return self.refit_trials * mean(m.refit_hours for m in self.models)


def _values(spec: StudySpec, target: str, model: str) -> list:
    """The values a trial of `model` can take for a training field: searched (choices, or the
    ends and middle of a range), else fixed, else the `TrainConfig` default."""
    from pricer.train.config import TrainConfig

    for param in spec.search_space.values():
        if param.target == target and _applies(param, model):
            if param.kind == "categorical":
                return list(param.choices)
            values = [param.low, (param.low + param.high) / 2, param.high]
            return [round(v) for v in values] if param.kind == "int" else values
    if target in spec.fixed:
        return [spec.fixed[target]]
    return [getattr(TrainConfig(), target)]


def _applies(param: ParamSpec, model: str) -> bool:
    allowed = dict(param.when).get("model")
    return allowed is None or model in allowed


def models_of(spec: StudySpec) -> list[str]:
    """The models a study trains: the searched choices, or the fixed one."""
    return list(spec.search_space["model"].choices) if "model" in spec.search_space else [spec.fixed["model"]]


def train_items_of(spec: StudySpec, given: int | None) -> tuple[int, str]:
    """Train items: given, else the built dataset's train split, else the data section's line limit
    (an upper bound: every line kept, 80 % to train).

    Raises:
        SpecError: none of these is known.
    """
    if given is not None:
        if given < 1:
            raise SpecError(f"--train-items: must be >= 1 (got {given})")
        return given, "given"
    for folder in sorted(Path(spec.workdir).glob("data-*")):
        if (folder / "dataset_dict.json").is_file():
            from pricer.data.dataset import load_splits

            return len(load_splits(folder)["train"]), f"built: {folder}"
    if spec.data.limit:
        return int(spec.data.limit * 0.8), f"data.limit {spec.data.limit:,} x 0.8 (upper bound)"
    raise SpecError(f"{spec.path}: the data is not built and the data section has no limit; pass "
                    "--train-items N (curated train items) or build it first (pricer data build)")


def tokens_per_item(spec: StudySpec, max_tokens: int) -> float:
    """Product-text tokens (the built train texts' mean, capped at max_tokens; else max_tokens) plus
    the prompt's frame."""
    for folder in sorted(Path(spec.workdir).glob("data-*")):
        if (folder / "dataset_dict.json").is_file():
            from pricer.data.dataset import as_items, load_splits

            texts = [item.text for item in as_items(load_splits(folder)["train"])[:2000]]
            text = mean(min(max_tokens, len(t) / CHARS_PER_TOKEN) for t in texts) if texts else max_tokens
            return text + PROMPT_TOKENS
    return max_tokens + PROMPT_TOKENS


def flops_throughput(params: float, tokens_per_item: float, gpu: str, decode: str) -> Throughput:
    """Throughput from a GPU's peak FLOP/s at `MFU` (a rough estimate, labelled as such)."""
    if gpu not in PEAK_FLOPS:
        raise SpecError(f"--gpu: one of {', '.join(PEAK_FLOPS)} (got {gpu!r}), or give --tokens-per-s")
    rate = PEAK_FLOPS[gpu] * MFU
    items = rate / (2 * params * tokens_per_item * DECODE_OVERHEAD)
    if decode == "median":
        items /= MEDIAN_COST
    return Throughput(rate / (6 * params), items, f"FLOPs estimate: {gpu} {PEAK_FLOPS[gpu] / 1e12:g} TFLOP/s "
                                                  f"x MFU {MFU:g}")


def _trial(spec: StudySpec, model: str, n_train: int, tokens_item: float, fraction: float, fixed: dict,
           tp: Throughput, load_s: float, batches: list | None = None) -> tuple[float, float, float]:
    """(tokens, evaluated items, hours) of one trial of `model`, averaged over the searched
    batch sizes (or `batches`) and epochs or steps."""
    def values(name: str) -> list:
        return [fixed[name]] if name in fixed else _values(spec, name, model)

    runs = []
    for batch in batches or values("batch_size"):
        for accum in values("grad_accum"):
            for steps in values("max_steps"):
                for epochs in values("epochs"):
                    items = n_train * fraction
                    steps_run = steps or max(1, math.ceil(epochs * items / (batch * accum)))
                    runs.append((steps_run, steps_run * batch * accum * tokens_item))
    steps, tokens = mean(s for s, _ in runs), mean(t for _, t in runs)
    eval_every = (fixed.get("eval_every") if "eval_every" in fixed
                  else spec.pruner.eval_every if spec.pruner.type != "none" or spec.pruner.eval_every else 0)
    evals = (steps // eval_every if eval_every else 0) + 1
    eval_items = values("eval_items")[0] * evals + (values("test_items")[0] or 0)
    seconds = tokens / tp.train_tokens_per_s + eval_items / tp.eval_items_per_s + load_s
    return tokens, eval_items, seconds / 3600


def plan_study(spec: StudySpec, *, gpu_gib: float = 80.0, gpu: str = "h100",
               throughput: dict[str, tuple[float, float | None]] | None = None,
               train_items: int | None = None) -> StudyPlan:
    """The study's plan.

    Args:
        gpu_gib: the memory a trial may use (one GPU's).
        gpu: the GPU the FLOPs estimate assumes when a model has no throughput given.
        throughput: model -> (train tokens/s, eval items/s or None), e.g. from `pricer bench` on the
            machine; eval items/s None: derived from the tokens/s (a forward is a third of a step).
        train_items: curated train items when the data is not built yet.
    """
    from pricer.model import catalog

    throughput = throughput or {}
    n_train, source = train_items_of(spec, train_items)
    max_tokens = int(_values(spec, "max_tokens", "")[0])
    tokens_item = tokens_per_item(spec, max_tokens)
    decode = str(_values(spec, "decode", "")[0])
    plan = StudyPlan(spec.name, gpu_gib, n_train, source, tokens_item, search_trials=spec.n_trials or 0,
                     refit_trials=spec.refit.top_k if spec.refit else 0)
    for model in models_of(spec):
        entry = catalog.resolve(model, spec.models)
        shape = shape_of(entry)
        params = shape.linear_params + shape.embedding_params if shape else None
        r = max(_values(spec, "lora_r", model))
        targets = "all-linear" if "all-linear" in _values(spec, "target_modules", model) else "attention"
        quant = str(_values(spec, "quantization", model)[0])
        peaks = {}
        weights = None
        if shape is not None:
            for batch in sorted(set(_values(spec, "batch_size", model))):
                est = estimate_training_memory(shape, batch_size=batch, seq_len=max_tokens + PROMPT_TOKENS,
                                               lora_r=r, target_modules=targets, quantization=quant)
                step = plan_step(shape, batch_size=batch, seq_len=max_tokens + PROMPT_TOKENS, lora_r=r,
                                 budget_gib=gpu_gib, target_modules=targets, quantization=quant)
                if not step.fits:
                    how = "does not fit"
                elif step.micro_batch_size == batch and not step.gradient_checkpointing:
                    how = "fits"
                else:
                    how = f"micro-batch {step.micro_batch_size}" + (" + checkpointing" if step.gradient_checkpointing
                                                                     else "")
                peaks[batch] = (est.total, how)
                weights = est.weights
        if model in throughput:
            tok_s, items_s = throughput[model]
            if items_s is None:  # a forward costs a third of a training step's FLOPs per token
                items_s = 3 * tok_s / (tokens_item * DECODE_OVERHEAD)
            # `pricer bench` reads greedily
            tp = Throughput(tok_s, items_s / (MEDIAN_COST if decode == "median" else 1), "given")
        elif params is not None:
            tp = flops_throughput(params, tokens_item, gpu, decode)
        else:
            raise SpecError(f"{model}: shape unknown before loading; give its throughput (--tokens-per-s "
                            f"{model}=N --items-per-s {model}=N)")
        load_s = LOAD_S["cpu" if gpu == "cpu" else "gpu"]
        tokens, items, hours = _trial(spec, model, n_train, tokens_item, spec.fidelity.train_fraction,
                                      {}, tp, load_s)
        by_batch = {b: _trial(spec, model, n_train, tokens_item, spec.fidelity.train_fraction, {}, tp, load_s,
                              [b])[2] for b in sorted(set(_values(spec, "batch_size", model)))}
        refit_hours = 0.0
        if spec.refit is not None:
            # a refit is not pruned: validated at the end only, unless its overrides say otherwise
            _, _, refit_hours = _trial(spec, model, n_train, tokens_item, spec.refit.train_fraction,
                                       {"eval_every": 0, **spec.refit.overrides}, tp, load_s)
        plan.models.append(ModelPlan(model, params / 1e9 if params else None, weights, peaks, tokens, items,
                                     hours, by_batch, refit_hours, tp))
    return plan

