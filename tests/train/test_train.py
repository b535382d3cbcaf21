"""One trial with each real tiny model: validation reaches the caller's callbacks, the adapter folder
is complete, reloads to the same predictions, and its price-token loss on the train items is lower
than the untrained model's."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pricer.errors import SpecError, TrialFailed
from pricer.train.config import TrainConfig


@pytest.mark.slow
def test_validation_is_reported_every_eval_every_steps_and_at_the_end(tiny_trial) -> None:
    result, reports = tiny_trial
    config = result.config
    assert [step for step, _ in reports] == list(range(config.eval_every, config.max_steps + 1, config.eval_every))
    assert result.val_curve == [(step, m.mae) for step, m in reports]
    assert result.val_metrics == reports[-1][1] and result.val_metrics.n == config.eval_items
    assert result.steps == config.max_steps and not result.stopped_early
    assert result.test_metrics is not None and result.test_metrics.n == config.test_items
    assert [set(p) for p in result.predictions] == [{"title", "category", "price", "predicted", "price_low",
                                                     "price_high"}] * config.test_items
    assert result.train_tokens_per_s > 0 and result.peak_mem_gib > 0
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_adapter_folder_holds_adapter_tokenizer_and_pricer_json(tiny_trial) -> None:
    result, _ = tiny_trial
    folder = result.adapter_dir
    assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    assert (folder / "tokenizer.json").is_file()
    meta = json.loads((folder / "pricer.json").read_text())
    assert meta["model"]["name"] == result.config.model
    assert meta["prompt"]["max_tokens"] == result.config.max_tokens and meta["prompt"]["chat"] == (meta["model"]["variant"] == "instruct")
    assert meta["train"] == result.config.to_dict()
    assert meta["metrics"]["test"]["n"] == result.config.test_items and meta["metrics"]["validation"]["mae"] == result.val_metrics.mae


@pytest.fixture(scope="module")
def reloaded(tiny_trial):
    from pricer.predict.predictor import load_predictor

    result, _ = tiny_trial
    return result, load_predictor(result.adapter_dir)


@pytest.mark.slow
def test_price_token_loss_on_the_train_items_goes_down(reloaded, built_data) -> None:
    import torch

    from pricer.data.dataset import as_items, load_splits
    from pricer.model.prompts import encode
    from pricer.train.step import collate, price_only_loss

    result, loaded = reloaded
    assert [s for s, _ in result.train_losses] == list(range(1, result.config.max_steps + 1))
    items = as_items(load_splits(built_data)["train"])[:result.config.train_items]
    batch = collate([encode(loaded.tokenizer, i.text, i.price, chat=loaded.spec.chat, max_tokens=loaded.max_tokens)
                     for i in items], loaded.tokenizer.pad_token_id, loaded.model.device)
    with torch.no_grad():
        trained = price_only_loss(loaded.model, **batch).item()
        with loaded.model.disable_adapter():
            untrained = price_only_loss(loaded.model, **batch).item()
    assert trained < 0.8 * untrained, (trained, untrained)


@pytest.mark.slow
def test_saved_adapter_reloads_and_predicts_what_the_trial_evaluated(reloaded, built_data) -> None:
    from pricer.data.dataset import load_items

    result, loaded = reloaded
    assert loaded.spec.name == result.config.model and loaded.max_tokens == result.config.max_tokens
    texts = {i.title: i.text for i in load_items(built_data)}
    predicted = loaded.predict([texts[p["title"]] for p in result.predictions])
    assert predicted == [p["predicted"] for p in result.predictions]


@pytest.mark.slow
def test_should_stop_ends_the_trial_after_the_first_report(tiny_models, built_data, tmp_path) -> None:
    from pricer.train.loop import train

    config = TrainConfig(max_steps=4, batch_size=2, max_tokens=48, train_items=4, eval_every=1,
                         eval_items=2, test_items=2)
    reports = []
    result = train(config, built_data, tmp_path / "a", report=lambda s, m: reports.append(s),
                   should_stop=lambda: True, progress=False)
    assert result.stopped_early and result.steps == 1 and reports == [1]
    assert result.test_metrics is None and result.val_metrics.n == 2
    assert (tmp_path / "a" / "pricer.json").is_file()


def test_a_nan_loss_fails_the_trial(tiny_models, built_data) -> None:
    from pricer.model.prompts import encode
    from pricer.train.loop import setup
    from pricer.train.step import collate, train_step

    run = setup(TrainConfig(max_steps=1, batch_size=2, max_tokens=32, train_items=2, eval_items=1), built_data)
    # a batch without a labelled token has no loss to average: NaN
    batch = collate([encode(run.tokenizer, "A kettle.", chat=True)], run.tokenizer.pad_token_id,
                    next(run.model.parameters()).device)
    with pytest.raises(TrialFailed, match="loss is nan; lower the learning rate"):
        train_step(run, [batch])


def test_config_from_dict_names_the_bad_field() -> None:
    config = TrainConfig.from_dict({"model": "gemma-3-270m", "lora_r": "8", "learning_rate": "2e-4",
                                    "max_steps": 30.0})
    assert (config.lora_r, config.learning_rate, config.max_steps) == (8, 2e-4, 30)
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(SpecError, match="unknown field.*lora_rank"):
        TrainConfig.from_dict({"lora_rank": 8})
    with pytest.raises(SpecError, match=r"lora_r: must be a whole number \(got 'eight'\)"):
        TrainConfig.from_dict({"lora_r": "eight"})
    with pytest.raises(SpecError) as err:  # every bad field at once
        TrainConfig.from_dict({"batch_size": 0, "target_modules": "mlp"})
    assert "batch_size: must be >= 1 (got 0)" in str(err.value)
    assert "target_modules: must be one of attention, all-linear (got 'mlp')" in str(err.value)
    with pytest.raises(SpecError, match=r"^train config: eval_items: must be >= 1 \(got 0\)$"):
        dataclasses.replace(config, eval_items=0)  # made in code, checked the same way
