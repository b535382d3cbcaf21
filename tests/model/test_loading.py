"""Quantized loading beyond what each family's toy shows (test_families): an unquantized load, a
cached base quantized once on a CPU, and the CPU repack trap stays defused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pricer.model.prompts import encode


def test_quantization_none_loads_a_plain_model(toys) -> None:
    import bitsandbytes as bnb

    from pricer.model.loading import compute_dtype, load_model

    model, _ = load_model(toys["toy-qwen2.5"], "none")
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == compute_dtype(model.device)


def test_a_cached_base_is_quantized_once_and_a_users_own_folder_at_each_load(toys, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU the second 4-bit load of a cached base quantizes no weight (it reads the nf4 copy)
    and prices like a load that quantized; a folder of the user's own, which may change under its
    name, is quantized at each load and leaves no copy in the cache."""
    import shutil
    from dataclasses import replace

    import bitsandbytes as bnb
    import torch

    from pricer.model.catalog import materialize
    from pricer.model.loading import load_model
    from pricer.model.weights import cache_root

    spec = toys["toy-qwen2.5"]
    own = replace(spec, name="own-qwen", source=str(tmp_path / "own"))
    shutil.copytree(materialize(spec), tmp_path / "own")
    quantized = []
    real = bnb.functional.quantize_4bit
    monkeypatch.setattr(bnb.functional, "quantize_4bit", lambda *a, **k: quantized.append(1) or real(*a, **k))

    load_model(spec)  # writes the copy, unless an earlier load did
    already = len(quantized)
    cached, tokenizer = load_model(spec)
    assert len(quantized) == already
    mine, _ = load_model(own)
    assert len(quantized) > already
    ids = tokenizer(["Price is $"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, mine(ids).logits)
    assert not list((cache_root() / "models").glob("own-qwen*"))


def test_lora_gradients_after_an_eval_mode_generate_match_the_reference(tiny_models, load_4bit, small_items) -> None:
    """The AVX512-bf16 repack trap: after an eval-mode forward, bitsandbytes would repack the 4-bit
    weights and every later LoRA gradient would silently be None."""
    import torch
    from peft import LoraConfig, get_peft_model

    from pricer.predict.evaluate import generate_prices
    from pricer.train.step import collate, price_only_loss

    spec = tiny_models["smollm2-135m-instruct"]
    base, tokenizer = load_4bit(spec.name)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=8, target_modules=spec.target_modules("all-linear"),
                                            init_lora_weights=False))
    try:
        items = small_items[:3]
        batch = collate([encode(tokenizer, i.text, i.price, chat=True, max_tokens=48) for i in items],
                        tokenizer.pad_token_id, model.device)

        def lora_grads() -> dict:
            model.train()
            model.zero_grad(set_to_none=True)
            price_only_loss(model, **batch).backward()
            return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

        reference = lora_grads()
        outputs = generate_prices(model, tokenizer, [encode(tokenizer, i.text, chat=True, max_tokens=48)
                                                     for i in items])
        after = lora_grads()
    finally:
        model.unload()

    assert len(outputs) == 3
    assert reference.keys() == after.keys() and len(after) == 30 * 7 * 2
    assert all(g is not None for g in after.values())
    for n in reference:
        torch.testing.assert_close(after[n], reference[n], msg=n)


def test_a_disk_that_takes_no_copy_costs_the_copy_not_the_load(toys, tmp_path: Path) -> None:
    """A process whose files may not pass 64 KiB (a full disk, as the fault bench makes one) loads
    a cached base in 4 bits all the same, says it wrote no copy, and leaves none half-written."""
    import resource
    import shutil
    import subprocess
    import sys

    from pricer.model.catalog import materialize

    models = tmp_path / "cache" / "models"
    base = materialize(toys["toy-qwen2.5"])
    shutil.copytree(base, models / base.name)

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    code = ("from pricer.model.catalog import CATALOG; from pricer.model.loading import load_model; "
            "model, _ = load_model(CATALOG['toy-qwen2.5']); print(type(model).__name__)")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PRICER_CACHE": str(tmp_path / "cache")},
                          preexec_fn=full_disk, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["Qwen2ForCausalLM"]
    assert "toy-qwen2.5: no nf4 copy written to the cache" in done.stderr
    assert sorted(p.name for p in models.iterdir() if not p.name.endswith(".lock")) == [base.name]
