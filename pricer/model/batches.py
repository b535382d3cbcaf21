"""Token rows padded into one batch: the one place the project pads.

Training pads on the right (every real token keeps its default position id); generation pads on
the left (new tokens are appended on the right of every row). Labels, when given, are padded with
`pricer.model.prompts.IGNORE`, which the loss skips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pricer.model.prompts import IGNORE

if TYPE_CHECKING:
    import torch

SIDES = ("left", "right")


def pad_batch(rows: Sequence[Sequence[int]], pad_id: int, *, side: str, labels: Sequence[Sequence[int]] | None = None,
              device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (1 on real tokens) of `rows` padded to the longest one,
    plus ``labels`` when `labels` (one list per row, as long as it) is given.

    Args:
        side: ``left`` (generation) or ``right`` (training).
    """
    import torch

    if side not in SIDES:
        raise ValueError(f"side: {side!r} is not one of {', '.join(SIDES)}")
    if labels is not None and [len(r) for r in labels] != [len(r) for r in rows]:
        raise ValueError("labels: each row's labels must be as long as its input ids")
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    padded_labels = torch.full((len(rows), width), IGNORE, dtype=torch.long) if labels is not None else None
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        input_ids[i, span] = torch.tensor(row, dtype=torch.long)
        attention_mask[i, span] = 1
        if padded_labels is not None:
            padded_labels[i, span] = torch.tensor(labels[i], dtype=torch.long)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if padded_labels is not None:
        batch["labels"] = padded_labels
    return {k: v.to(device) for k, v in batch.items()}
