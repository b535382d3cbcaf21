"""An ensemble predictor: fine-tuned adapters and a fitted classical baseline, combined in log-price
space with weights fitted on the validation items only.

A tiny model fine-tuned for minutes on a CPU guesses the price scale, while the random forest
reads words and dimensions; their errors differ, so a weighted geometric mean of the two beats
either. The weights are searched on a grid over the simplex (non-negative, summing to 1), minimising
the validation dollar error: few members, a few hundred items, nothing to overfit with.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from pricer.declared import declared
from pricer.errors import SpecError
from pricer.items import Item
from pricer.metrics import score
from pricer.model.adapter import META_FILE, write_meta

KIND = "ensemble"
# a member's name becomes a folder name (members/<name>): no separators, no "." or ".."
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# grid resolution of the weights: 0.05 for up to 4 members (1,771 points), coarser beyond
_STEPS = {1: 1, 2: 20, 3: 20, 4: 20, 5: 10, 6: 10}


@declared("ensemble member")
class Member:
    """One predictor in an ensemble.

    Args:
        name: e.g. ``trial-3`` or ``random_forest``.
        kind: ``adapter`` (a folder `pricer.predict.predictor.load_predictor` opens) or ``baseline`` (a
            fitted `pricer.predict.baselines.Baseline` in a `pricer.predict.baselinefile`).
        path: relative to the ensemble folder, and inside it.
        weight: its share in log-price space.
    """

    name: str
    kind: Literal["adapter", "baseline"]
    path: Annotated[str, Field(min_length=1)]
    # strict: "0.5" or true in a pricer.json is a broken file, not a weight
    weight: Annotated[float, Field(ge=0, le=1, strict=True, allow_inf_nan=False)]

    @field_validator("name")
    @classmethod
    def _plain(cls, name: str) -> str:
        if not _PLAIN_NAME.fullmatch(name):
            raise ValueError("not a plain name (letters, digits, '_', '-', '.'; it names a folder inside the "
                             "ensemble)")
        return name


def _simplex(members: int, steps: int) -> list[tuple[float, ...]]:
    points = []
    for cuts in itertools.combinations_with_replacement(range(steps + 1), members - 1):
        parts = [b - a for a, b in zip((0, *cuts), (*cuts, steps), strict=True)]
        points.append(tuple(p / steps for p in parts))
    return points


def combine(predictions: Sequence[Sequence[float | None]], weights: Sequence[float]) -> list[float | None]:
    """Per item, ``expm1(sum w_i log1p(p_i))`` over the members that gave a price (weights
    renormalised); None only when no member with weight did."""
    out: list[float | None] = []
    for row in zip(*predictions, strict=True):
        pairs = [(w, p) for w, p in zip(weights, row, strict=True) if p is not None and w > 0]
        total = sum(w for w, _ in pairs)
        out.append(None if not pairs or total == 0 else
                   math.expm1(sum(w * math.log1p(max(p, 0.0)) for w, p in pairs) / total))
    return out


def fit_weights(predictions: Sequence[Sequence[float | None]], truths: Sequence[float]) -> tuple[float, ...]:
    """The simplex-grid weights with the lowest dollar error on these (validation) items."""
    members = len(predictions)
    if members == 0 or not truths:
        raise SpecError("ensemble: needs at least one member and one validation item")
    steps = _STEPS.get(members, 5)

    def error(weights: tuple[float, ...]) -> float:
        return score(truths, combine(predictions, weights)).mae

    return min(_simplex(members, steps), key=error)


def save_ensemble(folder: Path, members: Sequence[Member], metrics: dict) -> Path:
    """Write ``pricer.json`` (kind ``ensemble``, the members and their weights, the metrics)."""
    return write_meta(folder, {"kind": KIND, "members": [asdict(m) for m in members], "metrics": metrics})


def inside(folder: Path, member: Member) -> Path:
    """The member's path, if it stays inside `folder` (no ``..``, not absolute, no link out): a
    folder from elsewhere must not make pricer read, or load code from, anywhere else.

    Raises:
        SpecError: naming the member and its path.
    """
    root = Path(folder).resolve()
    target = (root / member.path).resolve()
    if Path(member.path).is_absolute() or ".." in Path(member.path).parts or not target.is_relative_to(root):
        raise SpecError(f"{Path(folder) / META_FILE}: member {member.name}: path {member.path!r} leaves the "
                        "folder; refused (member paths are relative, inside the ensemble folder)")
    if target == root:  # the ensemble would load itself as its own member, without end
        raise SpecError(f"{Path(folder) / META_FILE}: member {member.name}: path {member.path!r} is the ensemble "
                        "folder itself; refused (a member lives in a folder of its own, e.g. members/NAME)")
    return target


class Ensemble:
    """A loaded ensemble folder (kind ``ensemble`` in `pricer.predict.predictor.LOADERS`): every member
    with weight loaded once; `predict` prices texts, `predict_items` items (a baseline member
    then also reads their details and category)."""

    kind = KIND

    def __init__(self, folder: Path, meta: dict, load_member: Callable[[Path], Any]) -> None:
        """Args:
            load_member: opens an adapter member's folder (`pricer.predict.predictor` passes its
                `load_predictor`, on the ensemble's device).
        """
        from pricer.predict.baselinefile import load_baseline

        self.folder = Path(folder)
        self.meta = meta
        try:
            self.members = [Member(**m) for m in meta["members"]]
        except (KeyError, TypeError) as exc:
            raise SpecError(f"{self.folder / META_FILE}: members: not an ensemble description ({exc})") from None
        for member in self.members:
            inside(self.folder, member)
        # a member the fit gave no weight is not loaded: an adapter costs a base model in memory
        self.loaded = [None if m.weight == 0 else
                       load_member(self.folder / m.path) if m.kind == "adapter" else
                       load_baseline(self.folder / m.path) for m in self.members]

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(m.weight for m in self.members)

    def member_predictions(self, items: Sequence[Item], *, batch_size: int = 32,
                           progress: bool = False) -> list[list[float | None]]:
        out = []
        for member, loaded in zip(self.members, self.loaded, strict=True):
            if loaded is None:
                out.append([None] * len(items))
            elif member.kind == "adapter":
                out.append(loaded.predict([i.text for i in items], batch_size=batch_size, progress=progress))
            else:
                out.append([float(p) for p in loaded.predict(items)])
        return out

    def predict_items(self, items: Sequence[Item], *, batch_size: int = 32,
                      progress: bool = False) -> list[float | None]:
        return combine(self.member_predictions(items, batch_size=batch_size, progress=progress), self.weights)

    def predict(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> list[float | None]:
        """Prices of prompt-ready product texts (a baseline member reads the dimensions from the text)."""
        return self.predict_items([Item(title="", category="", price=0.0, text=t) for t in texts],
                                  batch_size=batch_size, progress=progress)
