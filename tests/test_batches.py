"""The one padding helper: generation pads left, training right, and the recipe's collator and the
trial's batches agree on the same examples."""

from __future__ import annotations

import pytest

from pricer.model.batches import pad_batch
from pricer.model.prompts import IGNORE, Example

EXAMPLES = [Example([5, 6, 7], [1, 2]), Example([8], [3, 4, 9]), Example([10, 11], [])]


def test_left_padding_keeps_every_prompt_flush_right() -> None:
    batch = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert "labels" not in batch


def test_right_padding_keeps_every_token_at_its_own_position_and_ignores_padding_in_the_loss() -> None:
    batch = pad_batch([e.input_ids for e in EXAMPLES], pad_id=0, side="right", labels=[e.labels for e in EXAMPLES])
    for row, example in enumerate(EXAMPLES):
        n = len(example.input_ids)
        assert batch["input_ids"][row, :n].tolist() == example.input_ids
        assert batch["attention_mask"][row].sum() == n
        assert batch["labels"][row, :n].tolist() == example.labels
        assert set(batch["labels"][row, n:].tolist()) <= {IGNORE}


def test_labels_that_do_not_match_their_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="as long as"):
        pad_batch([[1, 2]], 0, side="right", labels=[[1]])


def test_the_recipes_collator_and_the_trials_batches_are_the_same_batch() -> None:
    import torch

    from pricer.bench.recipe import CompletionOnlyCollator, rows
    from pricer.train.step import collate

    ours = collate(EXAMPLES, 0, torch.device("cpu"))
    recipe = CompletionOnlyCollator(0, seen=[])(rows(EXAMPLES, max_tokens=64))
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(ours[key], recipe[key]), key


def test_the_recipes_collator_masks_a_row_whose_prompt_was_cut() -> None:
    from pricer.bench.recipe import CompletionOnlyCollator, rows

    batch = CompletionOnlyCollator(0)(rows(EXAMPLES[:1], max_tokens=2))
    assert batch["input_ids"].tolist() == [[5, 6]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE]]
