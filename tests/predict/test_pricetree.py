"""Median decoding walks the real model's digit tree on a shared, left-padded KV cache; its masses
must equal the probabilities of plain, unpadded forwards of each prompt and prefix."""

from __future__ import annotations

import math

import pytest

from pricer.predict.pricetree import weighted_median


@pytest.mark.parametrize(("mass", "median"), [
    ({10: 0.4, 20: 0.35, 300: 0.25}, 20.0),
    ({10: 0.6, 900: 0.4}, 10.0),
    ({5: 0.1, 7: 0.1}, 5.0),
    ({}, None),
])
def test_weighted_median(mass, median) -> None:
    assert weighted_median(mass) == median


@pytest.fixture(scope="module")
def smollm2_fp32(tiny_models):
    """Unquantized fp32: bf16 rounds a 3-token cached step and a full forward differently by a few %
    of a probability (so does a padded row against an unpadded one); fp32 agrees to 1e-6, so any
    gap left is the walk's own."""
    from pricer.model.loading import load_model

    spec = tiny_models["smollm2-135m-instruct"]
    model, tokenizer = load_model(spec, "none")
    model.float().eval()
    return spec, model, tokenizer


def test_digit_tokens_are_the_ten_digits(smollm2_fp32) -> None:
    from pricer.predict.pricetree import digit_tokens

    _, _, tokenizer = smollm2_fp32
    ids, texts = digit_tokens(tokenizer, 3)
    assert sorted(texts) == list("0123456789")
    assert [tokenizer.decode([i]) for i in ids] == texts


# sdpa and eager read the tree's 4-D mask; where a sliding window is shorter than the tree, rows are copied
@pytest.mark.parametrize("attention", ["sdpa", "eager", "copied rows"])
def test_masses_match_unpadded_forwards_of_each_prefix(smollm2_fp32, small_items, attention, monkeypatch) -> None:
    import torch

    from pricer.model.prompts import encode
    from pricer.predict.pricetree import digit_tokens, price_masses

    spec, model, tokenizer = smollm2_fp32
    model.set_attn_implementation("eager" if attention == "eager" else "sdpa")
    if attention == "copied rows":
        monkeypatch.setattr("pricer.predict.pricetree.tree_fits", lambda model, width: False)
    items = small_items[:2]
    # different lengths, so the shorter prompt is left-padded in the batch
    prompts = [encode(tokenizer, items[0].text, chat=spec.chat, max_tokens=20).prompt_ids,
               encode(tokenizer, items[1].text, chat=spec.chat, max_tokens=40).prompt_ids]
    assert len(prompts[0]) != len(prompts[1])
    masses = price_masses(model, tokenizer, prompts, max_digits=3, beam=2)

    ids, texts = digit_tokens(tokenizer, 3)
    token = dict(zip(texts, ids, strict=True))

    def probs(row: list[int]) -> torch.Tensor:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row])).logits[0, -1].float()
        return torch.softmax(logits, -1)

    for prompt, mass in zip(prompts, masses, strict=True):
        assert 0 < sum(mass.values()) <= 1 + 1e-6
        # the most likely one-digit and two-digit values, recomputed the slow way
        for low, high in ((1, 10), (10, 100)):
            value = max((v for v in mass if low <= v < high), key=mass.get)
            p, row = 1.0, list(prompt)
            for d in str(value):
                p *= float(probs(row)[token[d]])
                row.append(token[d])
            end = 1 - float(probs(row)[ids].sum())
            assert math.isclose(mass[value], p * end, rel_tol=1e-4), (value, mass[value], p * end)


def test_median_decoding_scores_like_greedy_and_weighs_every_price_greedy_writes(smollm2_fp32, small_items) -> None:
    """Both readings of the same items are scored alike, and the price greedy decoding writes is a
    value the median walk gave mass to: greedy follows the top token at each step, which the walk's
    beam always keeps (fp32, so batching and padding move no argmax)."""
    from pricer.metrics import score
    from pricer.model.prompts import encode
    from pricer.predict.evaluate import MAX_DIGITS, evaluate_items
    from pricer.predict.pricetree import price_masses

    spec, model, tokenizer = smollm2_fp32
    items = small_items[:6]
    read = {decode: evaluate_items(model, tokenizer, items, chat=spec.chat, max_tokens=48, batch_size=4,
                                   decode=decode) for decode in ("greedy", "median")}
    median = read["median"]
    assert all(o == "" or o.isdigit() for o in median.outputs)
    for evaluation in read.values():
        assert evaluation.metrics.n == 6 and evaluation.metrics.misses == evaluation.predictions.count(None)
        assert evaluation.metrics.mae == score([i.price for i in items], evaluation.predictions).mae

    prompts = [encode(tokenizer, i.text, chat=spec.chat, max_tokens=48).prompt_ids for i in items]
    masses = price_masses(model, tokenizer, prompts, max_digits=MAX_DIGITS)
    greedy = read["greedy"]
    written = [(o, int(p), mass) for o, p, mass in zip(greedy.outputs, greedy.predictions, masses, strict=True)
               if o[:1].isdigit()]
    assert written, f"greedy wrote no number to check: {greedy.outputs}"
    for output, value, mass in written:
        assert mass.get(value, 0) > 0, (output, sorted(mass, key=mass.get)[-5:])
    with pytest.raises(ValueError, match="decode"):
        evaluate_items(model, tokenizer, items, chat=spec.chat, decode="beam")
