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
def toys() -> dict:
    """The six toy entries, built once into the pricer cache."""
    from pricer.model.catalog import materialize

    for name in TOY_ENTRIES:
        materialize(CATALOG[name])
    return {name: CATALOG[name] for name in TOY_ENTRIES}


@pytest.fixture(scope="module")
def loaded(toys):
    """name -> (model, tokenizer) as a trial loads them (4-bit), each loaded once."""
    from pricer.model.loading import load_model

    cache: dict = {}

    def load(name: str):
        if name not in cache:
            cache[name] = load_model(toys[name], "nf4")
        return cache[name]
    return load


@pytest.fixture(scope="module")
def items(sample_path):
    from pricer.data.dataset import load_splits

    splits = load_splits(sample_path)
    return {"train": splits["train"].select(range(4)), "validation": splits["validation"].select(range(2)),
            "test": splits["test"].select(range(3))}


@pytest.mark.parametrize("name", list(TOY_ENTRIES))
def test_toy_loads_in_4bit_as_its_family_with_the_hub_entrys_settings(name, toys, loaded) -> None:
    import bitsandbytes as bnb
    from transformers import AutoTokenizer

    from pricer.model.catalog import materialize

    spec = toys[name]
    hub = CATALOG[TOY_ENTRIES[name]]
    assert (spec.family, spec.variant, spec.pad_token, spec.attn_implementation) == (
        hub.family, hub.variant, hub.pad_token, hub.attn_implementation)
    model, tokenizer = loaded(name)

    assert type(model).__name__ == CLASSES[spec.family]
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7 and quantized[0].weight.quant_state.quant_type == "nf4"
    assert tokenizer.pad_token == spec.pad_token and model.config.pad_token_id == tokenizer.pad_token_id
    attention = model.model.layers[0].self_attn
    config = model.config
    if spec.family == "llama":
        # Llama 3.1 ships no pad token: the entry's reserved one is what pads
        assert AutoTokenizer.from_pretrained(materialize(spec)).pad_token is None
        assert config.rope_parameters["rope_type"] == "llama3"
    if spec.family == "gemma2":
        assert config._attn_implementation == "eager"
        assert (config.final_logit_softcapping, config.attn_logit_softcapping) == (30.0, 50.0)
        assert config.layer_types[0] == "sliding_attention" and config.tie_word_embeddings
    if spec.family == "qwen2":
        assert attention.q_proj.bias is not None and attention.o_proj.bias is None


@pytest.mark.parametrize("name", list(TOY_ENTRIES))
def test_prompts_follow_the_familys_bos_and_chat_template(name, toys, loaded) -> None:
    from pricer.model.prompts import PRICE_PREFIX, encode, prompt_text

    spec = toys[name]
    _, tokenizer = loaded(name)
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


@pytest.mark.parametrize("name", ["toy-llama-3.1", "toy-gemma-2", "toy-qwen2.5"])
def test_price_only_loss_is_the_models_own_loss_gemma_2s_soft_cap_included(name, toys, loaded) -> None:
    import torch

    from pricer.model.prompts import encode
    from pricer.train.step import collate, price_only_loss

    spec = toys[name]
    model, tokenizer = loaded(name)
    batch = collate([encode(tokenizer, "A red kettle, 1.7 litres.", 23.5, chat=False),
                     encode(tokenizer, "Guitar strings, a set of six.", 7, chat=False)],
                    tokenizer.pad_token_id, model.device)
    with torch.no_grad():
        ours, reference = price_only_loss(model, **batch).item(), model(**batch).loss.item()
        assert ours == pytest.approx(reference, rel=1e-3)
        if spec.family == "gemma2":  # the toy's logits are wide enough for the cap to matter
            cap, model.config.final_logit_softcapping = model.config.final_logit_softcapping, None
            uncapped = price_only_loss(model, **batch).item()
            model.config.final_logit_softcapping = cap
            assert abs(uncapped - ours) > 0.1 * ours, (uncapped, ours)


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


def test_a_toy_trial_trains_its_lora_after_an_evaluation(toy_trial) -> None:
    spec, after_eval, final, losses, test, _ = toy_trial
    assert [s for s, _ in losses] == [1, 2] and all(math.isfinite(v) and v > 0 for _, v in losses)
    # step 2 follows step 1's evaluation: the 4-bit repack trap would leave it without gradients
    changed = [n for n in final if not final[n].equal(after_eval[n])]
    assert len(changed) == len(final), f"{spec.name}: {len(final) - len(changed)} LoRA tensors did not move"
    assert len(test.outputs) == 3 and test.metrics.n == 3


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
