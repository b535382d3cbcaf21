"""The memory estimate against peak memory measured on one H100 (issue 6's reference table)."""

from __future__ import annotations

import pytest

from pricer.model.memory import estimate_training_memory, plan_step
from pricer.model.shapes import SHAPES

# (shape, gradient checkpointing, measured peak GiB) for the recipe: LoRA r32 q/k/v/o, nf4,
# batch 16 x 182 tokens, full-vocabulary logits.
MEASURED = [
    ("llama-3.1-8b", True, 14.1),
    ("llama-3.1-8b", False, 36.6),
    ("qwen2.5-7b", True, 14.5),
    ("gemma-2-2b", True, 14.9),
    ("gemma-2-2b", False, 27.4),
]


def recipe(name: str, **overrides):
    kwargs = dict(batch_size=16, seq_len=182, lora_r=32, target_modules="attention",
                  gradient_checkpointing=True, price_only_logits=False)
    kwargs.update(overrides)
    return estimate_training_memory(SHAPES[name], **kwargs)


@pytest.mark.parametrize(("name", "checkpointing", "measured"), MEASURED)
def test_the_constants_reproduce_the_reference_peaks_they_were_fitted_to(name, checkpointing, measured):
    total = recipe(name, gradient_checkpointing=checkpointing).total
    assert abs(total - measured) / measured < 0.15, (total, measured)


@pytest.mark.parametrize("held_out", range(len(MEASURED)), ids=[f"{n} ckpt {c}" for n, c, _ in MEASURED])
def test_a_peak_left_out_of_the_fit_is_predicted_within_15_percent(held_out, monkeypatch):
    """The activation constants (the fitted part) refitted on the other four peaks, non-negative
    least squares; the form of the estimate must then predict the fifth, which it never saw."""
    import numpy as np
    from scipy.optimize import nnls

    from pricer.model import memory

    def estimate(name: str, checkpointing: bool, per_hidden: float, per_intermediate: float) -> float:
        monkeypatch.setattr(memory, "ACT_BYTES_PER_HIDDEN", per_hidden)
        monkeypatch.setattr(memory, "ACT_BYTES_PER_INTERMEDIATE", per_intermediate)
        return recipe(name, gradient_checkpointing=checkpointing).total

    rows, targets = [], []
    for i, (name, checkpointing, measured) in enumerate(MEASURED):
        if i != held_out:  # the estimate is linear in both constants
            zero = estimate(name, checkpointing, 0, 0)
            rows.append([estimate(name, checkpointing, 1, 0) - zero, estimate(name, checkpointing, 0, 1) - zero])
            targets.append(measured - zero)
    (per_hidden, per_intermediate), _ = nnls(np.array(rows), np.array(targets))
    name, checkpointing, measured = MEASURED[held_out]
    predicted = estimate(name, checkpointing, per_hidden, per_intermediate)
    assert abs(predicted - measured) / measured < 0.15, (predicted, measured, per_hidden, per_intermediate)


def test_gemma_batch_64_without_checkpointing_does_not_fit_an_h100():
    # Measured, and not among the fitted peaks: out of memory (fp32 logits over a 256k vocabulary).
    assert recipe("gemma-2-2b", batch_size=64, gradient_checkpointing=False).total > 80


def test_price_only_logits_shrink_the_logit_memory_by_orders_of_magnitude():
    full = recipe("gemma-2-2b")
    fast = recipe("gemma-2-2b", price_only_logits=True)
    assert fast.logits < full.logits / 20
    assert fast.total < full.total


def test_all_linear_lora_and_bf16_base_cost_more():
    base = recipe("llama-3.1-8b")
    assert recipe("llama-3.1-8b", target_modules="all-linear").lora_and_optimizer > base.lora_and_optimizer
    assert recipe("llama-3.1-8b", quantization="none").weights > 2.5 * base.weights


def test_smollm2_shape_counts_its_135m_parameters():
    shape = SHAPES["smollm2-135m-instruct"]
    total = shape.linear_params + shape.embedding_params
    assert 125e6 < total < 140e6


def test_plan_splits_the_batch_before_it_checkpoints_and_says_when_nothing_fits():
    kwargs = dict(batch_size=16, seq_len=182, lora_r=32)
    shape = SHAPES["llama-3.1-8b"]
    roomy = plan_step(shape, budget_gib=80, **kwargs)
    assert (roomy.micro_batch_size, roomy.gradient_checkpointing, roomy.fits) == (16, False, True)

    # the recipe's measured peak (checkpointing on): the fast path holds it by splitting instead
    recipe_peak = plan_step(shape, budget_gib=14.1, **kwargs)
    assert recipe_peak.fits and not recipe_peak.gradient_checkpointing
    assert 1 < recipe_peak.micro_batch_size < 16 and recipe_peak.estimate.total <= 14.1
    bigger = estimate_training_memory(shape, batch_size=2 * recipe_peak.micro_batch_size, seq_len=182, lora_r=32)
    assert bigger.total > 14.1  # the largest micro-batch that fits

    one_row = estimate_training_memory(shape, batch_size=1, seq_len=182 * 40, lora_r=32)
    long_rows = plan_step(shape, budget_gib=one_row.total - 0.5, batch_size=16, seq_len=182 * 40, lora_r=32)
    assert long_rows.fits and long_rows.gradient_checkpointing

    by_hand = plan_step(shape, budget_gib=14.1, micro_batch_size=16, **kwargs)
    assert (by_hand.micro_batch_size, by_hand.gradient_checkpointing, by_hand.fits) == (16, False, False)

    nothing = plan_step(shape, budget_gib=3, **kwargs)
    assert not nothing.fits and "exceeds the 3.00 GiB budget" in nothing.describe()


def test_fp32_compute_doubles_the_activations():
    bf16 = estimate_training_memory(SHAPES["smollm2-135m-instruct"], batch_size=16, seq_len=182, lora_r=32)
    fp32 = estimate_training_memory(SHAPES["smollm2-135m-instruct"], batch_size=16, seq_len=182, lora_r=32,
                                    compute_bytes=4)
    assert fp32.activations == pytest.approx(2 * bf16.activations, rel=1e-3)


# Peak RSS of 2-step CPU fine-tunes (2-core AMD EPYC with AVX512-bf16: bf16 compute; nf4 base,
# price-only logits; 2026-12-07): (shape, LoRA targets, r, batch, tokens a row, measured peak GiB). The
# CPU factors were fitted to the first four; the last two were measured after, as a check.
MEASURED_CPU = [
    ("gemma-3-270m", "all-linear", 16, 16, 181, 6.02),
    ("gemma-3-270m", "all-linear", 16, 16, 300, 8.67),
    ("smollm2-135m-instruct", "attention", 32, 16, 210, 5.93),
    ("smollm2-135m-instruct", "all-linear", 8, 8, 325, 6.54),
]
HELD_OUT_CPU = [
    ("gemma-3-270m", "attention", 8, 8, 254, 4.00),
    ("smollm2-135m-instruct", "all-linear", 16, 16, 281, 9.65),
]


def cpu_step(name, targets, r, batch, tokens, *, cpu=True):
    return estimate_training_memory(SHAPES[name], batch_size=batch, seq_len=tokens, lora_r=r, target_modules=targets,
                                    compute_bytes=2, cpu=cpu)


@pytest.mark.parametrize(("name", "targets", "r", "batch", "tokens", "measured"), MEASURED_CPU)
def test_the_cpu_factors_reproduce_the_cpu_peaks_they_were_fitted_to(name, targets, r, batch, tokens, measured):
    assert cpu_step(name, targets, r, batch, tokens).total == pytest.approx(measured, rel=0.05)


@pytest.mark.parametrize(("name", "targets", "r", "batch", "tokens", "measured"), HELD_OUT_CPU)
def test_cpu_peaks_left_out_of_the_fit_are_predicted_within_10_percent_where_the_gpu_fit_undercounts(
        name, targets, r, batch, tokens, measured):
    assert cpu_step(name, targets, r, batch, tokens).total == pytest.approx(measured, rel=0.10)
    assert cpu_step(name, targets, r, batch, tokens, cpu=False).total < 0.85 * measured


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="trials run on the GPU here, where the GPU fit applies")
def test_a_trial_on_this_cpu_plans_with_the_cpu_estimate() -> None:
    from pricer.model.catalog import resolve
    from pricer.model.loading import compute_dtype, pick_device
    from pricer.train.config import TrainConfig
    from sweeps.run.guard import check, sequence_length

    spec = resolve("gemma-3-270m")
    config = TrainConfig(model=spec.name, batch_size=16, lora_r=16, target_modules="all-linear", neighbors=5)
    planned = check(config, spec, budget=64).estimate
    gpu = estimate_training_memory(SHAPES[spec.name], batch_size=16, seq_len=sequence_length(config, spec), lora_r=16,
                                   target_modules="all-linear", compute_bytes=compute_dtype(pick_device()).itemsize)
    assert planned.activations > 1.5 * gpu.activations  # the guard plans for where the trial runs: this CPU
