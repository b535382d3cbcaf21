"""The memory estimate against peak memory measured on one H100 (issue 6's reference table)."""

from __future__ import annotations

import pytest

from pricer.memory import estimate_training_memory
from pricer.shapes import SHAPES

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
def test_estimate_is_within_15_percent_of_measured_peak(name, checkpointing, measured):
    total = recipe(name, gradient_checkpointing=checkpointing).total
    assert abs(total - measured) / measured < 0.15, (total, measured)


def test_gemma_batch_64_without_checkpointing_does_not_fit_an_h100():
    # Measured: out of memory (fp32 logits over a 256k vocabulary).
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
