"""The real model families on a CPU: toy-size random-weight Llama 3.1, Gemma 2 and Qwen 2.5 (base
and instruct, `pricer.model.toys`) go through the catalog, the 4-bit load, a trial's stages (and `train`
itself), the adapter folder, its reload and the bf16 merge `pricer export --merge` writes. Random
weights write garbage prices, so these check mechanics only."""

from __future__ import annotations

import math

import pytest

from pricer.model.catalog import CATALOG, TOY_ENTRIES

CLASSES = {"llama": "LlamaForCausalLM", "gemma2": "Gemma2ForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# the text an instruct prompt ends in before "Price is $": each family's assistant turn header
ASSISTANT_TURN = {"llama": "<|start_header_id|>assistant<|end_header_id|>\n\n",
                  "gemma2": "<start_of_turn>model\n", "qwen2": "<|im_start|>assistant\n"}
TEXT_TOKENS = 24


@pytest.fixture(scope="module")
def items(small_data):
    return {"train": small_data["train"].select(range(4)), "validation": small_data["validation"].select(range(2)),
            "test": small_data["test"].select(range(3))}


@pytest.mark.parametrize("name", list(TOY_ENTRIES))
def test_toy_loads_in_4bit_as_its_family_with_the_hub_entrys_settings(name, toys, load_4bit) -> None:
    import dataclasses

    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from pricer.model.catalog import materialize

    spec = toys[name]
    hub = CATALOG[TOY_ENTRIES[name]]
    # the toy is its hub entry but for where the weights come from
    assert dataclasses.replace(spec, name=hub.name, source=hub.source) == hub
    model, tokenizer = load_4bit(name)

    assert type(model).__name__ == CLASSES[spec.family]
    assert model.config._attn_implementation == ("eager" if spec.family == "gemma2" else "sdpa")
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7 and not any(m.support_avx512bf16_for_cpu for m in quantized)
    assert quantized[0].weight.quant_state.quant_type == "nf4" and quantized[0].weight.quant_state.nested
    assert tokenizer.pad_token == spec.pad_token and tokenizer.padding_side == "left"
    assert model.config.pad_token_id == tokenizer.pad_token_id
    for kind, per_layer in (("attention", 4), ("all-linear", 7)):
        lora = get_peft_model(model, LoraConfig(r=4, target_modules=spec.target_modules(kind)))
        try:
            assert sum(1 for n, _ in lora.named_modules() if n.endswith(".lora_A")) == 2 * per_layer
        finally:
            lora.unload()
    attention = model.model.layers[0].self_attn
    config = model.config
    if spec.family == "llama":
        # Llama 3.1 ships no pad token: the entry's reserved one is what pads
        assert AutoTokenizer.from_pretrained(materialize(spec)).pad_token is None
        assert config.rope_parameters["rope_type"] == "llama3"
    if spec.family == "gemma2":
        assert (config.final_logit_softcapping, config.attn_logit_softcapping) == (30.0, 50.0)
        assert config.layer_types[0] == "sliding_attention" and config.tie_word_embeddings
    if spec.family == "qwen2":
        assert attention.q_proj.bias is not None and attention.o_proj.bias is None


@pytest.mark.parametrize("name", list(TOY_ENTRIES))
def test_prompts_follow_the_familys_bos_and_chat_template(name, toys, load_4bit) -> None:
    from pricer.model.prompts import PRICE_PREFIX, encode, prompt_text

    spec = toys[name]
    _, tokenizer = load_4bit(name)
    example = encode(tokenizer, "A red kettle, 1.7 litres.", 23.5, chat=spec.chat)
    text = prompt_text(tokenizer, "A red kettle, 1.7 litres.", chat=spec.chat)
    assert tokenizer.decode(example.answer_ids) == "24.00"
    if spec.chat:
        assert text.endswith(ASSISTANT_TURN[spec.family] + PRICE_PREFIX)
    else:
        assert text.startswith("How much") and not any(t in text for t in ASSISTANT_TURN.values())
    if spec.family == "qwen2":
        assert tokenizer.bos_token is None
    else:  # one BOS, whether the tokenizer adds it (base) or the chat template writes it (instruct)
        assert example.prompt_ids[0] == tokenizer.bos_token_id
        assert example.prompt_ids.count(tokenizer.bos_token_id) == 1
    if spec.family == "gemma2" and spec.chat:
        from jinja2 import TemplateError

        with pytest.raises(TemplateError, match="System role not supported"):
            tokenizer.apply_chat_template([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}],
                                          tokenize=False)


@pytest.fixture(scope="module", params=list(TOY_ENTRIES))
def toy_trial(request, toys, items, tmp_path_factory):
    """A trial's stages on one toy: 2 steps with validation after each, test evaluation, the
    adapter folder. Returns (the spec, the LoRA weights at the first report and at the end, the
    losses, the test evaluation, the adapter folder)."""
    from datasets import DatasetDict

    from pricer.train.config import TrainConfig
    from pricer.train.loop import evaluate_split, fit, save, setup

    spec = toys[request.param]
    config = TrainConfig(model=spec.name, max_steps=2, batch_size=2, max_tokens=TEXT_TOKENS, eval_every=1,
                         eval_items=2, test_items=3, learning_rate=1e-2, warmup_steps=0, lora_r=4)
    run = setup(config, DatasetDict(items), spec=spec)

    def lora_weights() -> dict:
        return {n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad}

    snapshots = []
    trained = fit(run, report=lambda step, metrics: snapshots.append(lora_weights()), progress=False)
    test = evaluate_split(run, run.test_items)
    out = save(run, tmp_path_factory.mktemp("toy") / spec.name, {"validation": trained.last_val.metrics,
                                                                   "test": test.metrics})
    return spec, snapshots[0], lora_weights(), trained.losses, test, out


@pytest.mark.slow
def test_a_toy_trial_trains_its_lora_after_an_evaluation(toy_trial) -> None:
    spec, after_eval, final, losses, test, _ = toy_trial
    assert [s for s, _ in losses] == [1, 2] and all(math.isfinite(v) and v > 0 for _, v in losses)
    # step 2 follows step 1's evaluation: the 4-bit repack trap would leave it without gradients
    changed = [n for n in final if not final[n].equal(after_eval[n])]
    assert len(changed) == len(final), f"{spec.name}: {len(final) - len(changed)} LoRA tensors did not move"
    assert len(test.outputs) == 3 and test.metrics.n == 3


@pytest.mark.slow
def test_a_toy_adapter_folder_reloads_to_the_same_outputs(toy_trial, items) -> None:
    from pricer.model.adapter import read_meta
    from pricer.model.prompts import encode
    from pricer.predict.evaluate import generate_prices
    from pricer.predict.predictor import load_predictor

    spec, _, _, _, test, out = toy_trial
    assert read_meta(out)["model"]["source"] == f"toy:{TOY_ENTRIES[spec.name]}"
    loaded = load_predictor(out)  # what `pricer predict` and `pricer evaluate --adapter` load
    assert loaded.spec == spec and type(loaded.model.get_base_model()).__name__ == CLASSES[spec.family]
    texts = list(items["test"]["text"])
    examples = [encode(loaded.tokenizer, t, chat=spec.chat, max_tokens=TEXT_TOKENS) for t in texts]
    assert generate_prices(loaded.model, loaded.tokenizer, examples) == test.outputs
    assert loaded.predict(texts) == test.predictions


@pytest.mark.slow
def test_train_on_a_toy_and_merge_its_adapter_into_the_dequantized_base(toys, items, tmp_path) -> None:
    from datasets import DatasetDict
    from transformers import AutoModelForCausalLM

    from pricer.model.adapter import merge_into_base, read_meta
    from pricer.train.config import TrainConfig
    from pricer.train.loop import train

    config = TrainConfig(model="toy-gemma-2-it", max_steps=1, batch_size=2, max_tokens=TEXT_TOKENS,
                         eval_items=1, test_items=1, lora_r=4)
    result = train(config, DatasetDict(items), tmp_path / "adapter", progress=False)
    assert result.steps == 1 and result.test_metrics.n == 1
    merged = merge_into_base(result.adapter_dir, read_meta(result.adapter_dir)["model"], tmp_path / "merged")
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert type(model).__name__ == "Gemma2ForCausalLM" and not hasattr(model, "peft_config")
