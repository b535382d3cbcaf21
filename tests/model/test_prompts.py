"""Price prompts with the two real tokenizers: Gemma 3 (base: plain prompt) and SmolLM2 (instruct:
chat template). Only the price tokens carry labels."""

from __future__ import annotations

import pytest

from pricer.model.prompts import IGNORE, PRICE_PREFIX, QUESTION, answer, cut_text, encode

TEXT = ("Stainless steel electric kettle, 1.7 litres, 1500 W, auto shut-off, boil-dry protection, "
        "cordless 360 degree base, limescale filter. ") * 12


@pytest.fixture(scope="module", params=["gemma-3-270m", "smollm2-135m-instruct"])
def model(request, tiny_models):
    from pricer.model.loading import load_tokenizer

    spec = tiny_models[request.param]
    return spec, load_tokenizer(spec)


def test_answer_is_the_price_to_the_nearest_dollar() -> None:
    assert answer(129.4) == "129.00"
    assert answer(0.6) == "1.00"
    assert answer(999.49) == "999.00"


def test_only_the_price_tokens_are_labelled(model) -> None:
    spec, tokenizer = model
    example = encode(tokenizer, TEXT, 129.4, chat=spec.chat, max_tokens=40)

    labelled = [t for t in example.labels if t != IGNORE]
    assert labelled == example.answer_ids
    assert tokenizer.decode(labelled) == "129.00"
    assert example.labels[:len(example.prompt_ids)] == [IGNORE] * len(example.prompt_ids)
    assert len(example.labels) == len(example.input_ids)
    # the prompt a prediction starts from is exactly the labelled example's prefix
    assert encode(tokenizer, TEXT, chat=spec.chat, max_tokens=40).input_ids == example.prompt_ids


def test_base_prompt_is_plain_text_and_instruct_goes_through_the_chat_template(model) -> None:
    spec, tokenizer = model
    text = tokenizer.decode(encode(tokenizer, "A red kettle.", 20, chat=spec.chat).input_ids,
                            skip_special_tokens=False)
    assert text.endswith(f"{PRICE_PREFIX}20.00")
    assert f"{QUESTION}\n\nA red kettle." in text
    if spec.chat:
        assert "<|im_start|>user" in text and "<|im_start|>assistant\nPrice is $20.00" in text
    else:
        assert text == f"{tokenizer.bos_token}{QUESTION}\n\nA red kettle.\n\n{PRICE_PREFIX}20.00"


def test_text_is_cut_to_the_token_budget_of_the_models_own_tokenizer(model) -> None:
    _, tokenizer = model
    cut = cut_text(tokenizer, TEXT, 40)
    assert TEXT.startswith(cut[:50])
    assert 35 <= len(tokenizer(cut, add_special_tokens=False)["input_ids"]) <= 41
    assert cut_text(tokenizer, "Short text.", 40) == "Short text."
