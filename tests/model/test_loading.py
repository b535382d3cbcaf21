"""Quantized loading beyond what each family's toy shows (test_families): an unquantized load, and
the CPU repack trap stays defused."""

from __future__ import annotations

from pricer.model.prompts import encode


def test_quantization_none_loads_a_plain_model(toys) -> None:
    import bitsandbytes as bnb

    from pricer.model.loading import compute_dtype, load_model

    model, _ = load_model(toys["toy-qwen2.5"], "none")
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == compute_dtype(model.device)


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
