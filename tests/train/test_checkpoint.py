"""A trial that resumes from its checkpoint trains the steps it had left exactly as if it had never
stopped: the same batches, weights, optimizer, schedule and dropout masks (the toy Llama 3.1 in 4 bits, 4 steps)."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
from pathlib import Path

import pytest

from pricer.errors import SpecError
from pricer.train.checkpoint import FILE, load_checkpoint
from pricer.train.config import TrainConfig
from pricer.train.loop import train
from pricer.train.step import batch_order


def test_batch_order_is_the_same_for_a_seed_so_a_resumed_run_can_skip_what_it_saw() -> None:
    def batches(seed: int) -> list[list[int]]:
        return list(itertools.islice(batch_order(10, 3, seed=seed), 12))  # 4 passes of 3 batches

    assert batches(7) == batches(7) != batches(8)
    assert all(len(b) == 3 and len(set(b)) == 3 for b in batches(7))


@pytest.mark.slow
def test_resumed_training_repeats_the_uninterrupted_steps(tmp_path: Path, built_data: Path, toys) -> None:
    config = TrainConfig(model="toy-llama-3.1", max_steps=4, batch_size=2, max_tokens=64, train_items=16,
                         eval_items=2, test_items=2, warmup_steps=1, lora_dropout=0.1, checkpoint_every=2)
    spec = toys["toy-llama-3.1"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    def snapshot(step: int, loss: float) -> None:
        # what a worker killed during step 3 leaves behind: the checkpoint of step 2
        if step == 3:
            shutil.copytree(whole / "checkpoint", killed / "checkpoint")

    uninterrupted = train(config, built_data, whole / "adapter", spec=spec, on_loss=snapshot,
                          checkpoint_dir=whole / "checkpoint", progress=False)
    assert load_checkpoint(whole / "checkpoint", config).step == 4  # the last step is saved too
    assert load_checkpoint(killed / "checkpoint", config).step == 2

    live: list[tuple[int, float]] = []
    resumed = train(config, built_data, killed / "adapter", spec=spec, on_loss=lambda s, v: live.append((s, v)),
                    checkpoint_dir=killed / "checkpoint", resume_from=killed / "checkpoint", progress=False)

    assert resumed.resumed_from == 2 and uninterrupted.resumed_from is None
    assert [s for s, _ in live] == [3, 4]  # only the steps it had left were trained
    assert [s for s, _ in resumed.train_losses] == [1, 2, 3, 4]
    print(f"train loss uninterrupted {uninterrupted.train_losses}, resumed {resumed.train_losses}")
    assert [v for _, v in resumed.train_losses] == pytest.approx([v for _, v in uninterrupted.train_losses],
                                                                 rel=1e-5)
    assert resumed.val_metrics.mae == pytest.approx(uninterrupted.val_metrics.mae, rel=1e-4)
    assert resumed.to_dict()["resumed_from"] == 2

    with pytest.raises(SpecError, match="learning_rate"):
        load_checkpoint(killed / "checkpoint", dataclasses.replace(config, learning_rate=5e-4))
    assert not list((killed / "checkpoint").glob(f"{FILE}.partial-*"))  # written by rename, nothing left over


def test_a_corrupted_checkpoint_is_skipped_and_the_trial_starts_from_step_0(tmp_path: Path) -> None:
    """A retry resumed from a damaged checkpoint failed (torch.load raised) and was charged to
    the budget: a bit of disk damage cost a trial."""
    import torch

    config = TrainConfig(model="toy-llama-3.1", max_steps=2)
    torch.save({"step": 1, "config": config.to_dict(), "lora": {"w": torch.zeros(64, 64)}, "optimizer": {}},
               tmp_path / FILE)
    whole = (tmp_path / FILE).read_bytes()
    (tmp_path / FILE).write_bytes(whole[: len(whole) // 2])  # truncated, as a full disk or a crash leaves it
    assert load_checkpoint(tmp_path, config) is None
    (tmp_path / FILE).write_bytes(b"\0" * 100)
    assert load_checkpoint(tmp_path, config) is None
