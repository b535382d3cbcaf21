"""Evaluation parses and scores real generations; the stopping rule ends a row once its number is
complete; the CLI's evaluate / predict serve a trained adapter folder."""

from __future__ import annotations

import json

import pytest

from pricer.metrics import parse_price


@pytest.fixture(scope="module")
def smollm2(tiny_models, load_4bit):
    spec = tiny_models["smollm2-135m-instruct"]
    model, tokenizer = load_4bit(spec.name)
    return spec, model, tokenizer


def test_evaluation_parses_and_scores_real_generations(smollm2, small_items) -> None:
    from pricer.predict.evaluate import MAX_NEW_TOKENS, evaluate_items

    spec, model, tokenizer = smollm2
    items = small_items
    evaluation = evaluate_items(model, tokenizer, items, chat=spec.chat, max_tokens=64, batch_size=8)

    assert len(evaluation.outputs) == 12
    assert evaluation.predictions == [parse_price(o) for o in evaluation.outputs]
    assert all(len(tokenizer(o, add_special_tokens=False)["input_ids"]) <= MAX_NEW_TOKENS
               for o in evaluation.outputs)
    metrics = evaluation.metrics
    assert metrics.n == 12 and metrics.misses == evaluation.predictions.count(None)
    # each item scored against its own output, in the items' order, whatever order the batches ran in
    assert metrics.errors == pytest.approx([abs((p or 0) - i.price) for p, i in zip(evaluation.predictions, items,
                                                                                     strict=True)])
    rows = evaluation.rows(items)
    assert rows[0]["price"] == items[0].price and rows[0]["output"] == evaluation.outputs[0]


@pytest.mark.parametrize(("written", "done"), [
    ("129.", True), ("45 ", True), ("1,299.", True), ("The", True), ("999", True),
    ("12", False), (" 4", False), ("1,2", False), ("", False),
])
def test_a_row_is_done_once_its_number_is_complete(smollm2, written, done) -> None:
    import torch

    from pricer.predict.evaluate import PriceComplete

    _, _, tokenizer = smollm2
    prompt = tokenizer("Price is $", add_special_tokens=False)["input_ids"]
    new = tokenizer(written, add_special_tokens=False)["input_ids"] if written else []
    ids = torch.tensor([prompt + new, prompt + new])
    assert PriceComplete(tokenizer, len(prompt))(ids, None).tolist() == [done, done]


@pytest.mark.parametrize(("written", "kept"), [
    ("12345.00", "123.00"), ("999", "999"), (" 1234", " 123"), ("1,299.", "1,299."), ("42.", "42."),
])
def test_a_run_of_digits_is_read_up_to_the_curated_price_range(written, kept) -> None:
    from pricer.predict.evaluate import within_range

    assert within_range(written) == kept


# SmolLM2's trial only: the CLI reads every folder the same way whatever its base, and gemma's
# trial folder is served in test_train (reloaded, same predictions). The gemma case used to be
# collected, train gemma's session trial if nothing else had, and then always skip.
@pytest.mark.slow
@pytest.mark.parametrize("tiny_trial", ["smollm2-135m-instruct"], indirect=True)
def test_cli_evaluate_json_and_predict_serve_the_adapter_folder(tiny_trial, small_items, tmp_path, capsys) -> None:
    from sweeps.cli.main import main

    result, _ = tiny_trial
    assert result.config.model == "smollm2-135m-instruct"
    items = small_items[:4]
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text("".join(json.dumps(i.to_dict()) + "\n" for i in items))

    assert main(["evaluate", "--adapter", str(result.adapter_dir), "--items", str(jsonl), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == 4 and {"mae", "rmsle", "hit_rate"} <= set(scores)

    # predict reads the folder as evaluate does, one "price  [low, high]" line per text ("-" for a
    # miss, beside the range of median decoding): its prices give evaluate's $ error
    assert main(["predict", "--adapter", str(result.adapter_dir), *(i.text for i in items)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    priced = [None if line.split()[0] == "-" else float(line.split()[0]) for line in lines]
    assert sum(abs((p or 0) - i.price) for p, i in zip(priced, items, strict=True)) / 4 == pytest.approx(
        scores["mae"], abs=0.01)  # the lines round to cents

    # the folder says how training read prices; bench decode compares both ways on it
    assert json.loads((result.adapter_dir / "pricer.json").read_text())["prompt"]["decode"] == "median"
    assert main(["bench", "decode", str(result.adapter_dir), "--items", str(jsonl), "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["greedy"]["n"] == bench["median"]["n"] == 4
    assert bench["median"]["mae"] == pytest.approx(scores["mae"])  # the folder's own decoding, as evaluate ran it


def test_cli_names_a_folder_that_is_not_an_adapter(tmp_path, capsys) -> None:
    from sweeps.cli.main import main

    assert main(["predict", "--adapter", str(tmp_path), "a kettle"]) == 2
    assert "not an adapter folder (no pricer.json)" in capsys.readouterr().err
