"""Which curated items a build keeps: a per-dollar cap (`balance`) or the recipe's weighted sampling.

Both work on positions into compact arrays (prices, category codes), never on the items
themselves, so a build can choose among millions of products while holding only numbers.

The recipe (week 6 of ed-donner's llm_engineering): per whole-dollar bucket, keep everything up
to 1,200 items; above that, draw 1,200 with weight 1 for its dominant category (Automotive) and
5 for the others; buckets from $240 up keep everything. `Sampling` generalises the weights:
``inverse`` weighs each category by the inverse of its share of the corpus, or a mapping names
them (``{"Automotive": 1, "*": 5}`` is the recipe's).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, TypeAdapter, field_validator
from pydantic_core import PydanticCustomError

from pricer.declared import declared
from pricer.errors import SpecError
from pricer.metrics import BAND_NAMES, PRICE_BANDS

INVERSE = "inverse"
OTHERS = "*"


# a category's weight; ints stay ints, so a study file's weights key the cached build as before
_WEIGHT = Annotated[int | float, Field(gt=0)]
_WEIGHTS = TypeAdapter(Annotated[dict[str, _WEIGHT], Field(min_length=1)])


@declared("sampling")
class Sampling:
    """The recipe's sampling.

    Args:
        cap: items per whole-dollar bucket kept as they are; a fuller bucket is sampled down to it.
        category_weights: ``inverse`` (weight = 1 / the category's share of all items) or a mapping
            category -> weight > 0, ``*`` for the others (default 1).
        keep_all_from: buckets at or above this many dollars keep every item (the recipe: 240).
    """

    cap: Annotated[int, Field(ge=1, examples=[1200])]
    category_weights: Literal["inverse"] | dict[str, _WEIGHT] = INVERSE
    keep_all_from: Annotated[int | float, Field(gt=0)] | None = None

    @field_validator("category_weights", mode="wrap")
    @classmethod
    def _inverse_or_mapping(cls, value: object, handler: Callable) -> str | dict[str, float]:
        # by hand only to say which of the two forms is wrong (pydantic would report both)
        if isinstance(value, str):
            if value != INVERSE:
                raise PydanticCustomError("spec", f"{INVERSE!r} or a mapping category -> weight (got {value!r})")
            return value
        return dict(sorted(_WEIGHTS.validate_python(value).items()))

    @classmethod
    def parse_weights(cls, text: str) -> str | dict[str, float]:
        """The CLI's ``--category-weights``: ``inverse`` or ``Automotive=1,*=5``."""
        text = text.strip()
        if text == INVERSE:
            return INVERSE
        weights: dict[str, float] = {}
        for part in text.split(","):
            name, sep, value = part.partition("=")
            try:
                weights[name.strip()] = float(value)
            except ValueError:
                sep = ""
            if not sep or not name.strip():
                raise SpecError(f"--category-weights: {part.strip()!r} is not CATEGORY=WEIGHT; "
                                "e.g. inverse or Automotive=1,*=5")
        return weights

    def to_dict(self) -> dict:
        weights = self.category_weights
        return {"cap": self.cap, "category_weights": weights if isinstance(weights, str) else dict(weights),
                "keep_all_from": self.keep_all_from}

    def weights(self, names: Sequence[str], counts: np.ndarray) -> np.ndarray:
        """One weight per category code (`names[code]`), `counts` items of each in the corpus."""
        if self.category_weights == INVERSE:
            share = np.maximum(counts, 1) / max(int(counts.sum()), 1)
            return 1.0 / share
        mapping = self.category_weights
        other = float(mapping.get(OTHERS, 1.0))
        return np.array([float(mapping.get(name, other)) for name in names])


def dollar_buckets(prices: np.ndarray) -> np.ndarray:
    """Whole-dollar bucket per price: Python's ``round`` (half to even), as `balance` always used."""
    return np.rint(prices).astype(np.int64)


def _buckets(prices: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(dollars, positions in their original order) per non-empty bucket, cheapest first."""
    buckets = dollar_buckets(prices)
    order = np.argsort(buckets, kind="stable")
    sorted_buckets = buckets[order]
    starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]])
    ends = np.r_[starts[1:], len(order)]
    return [(int(sorted_buckets[s]), order[s:e]) for s, e in zip(starts, ends, strict=True)]


def balanced_positions(prices: np.ndarray, cap: int, seed: int) -> list[int]:
    """Positions kept by the per-dollar cap: at most `cap` per bucket, drawn uniformly with `seed`
    (``random.Random(seed).sample`` per bucket, cheapest first: the same items `balance` kept
    before builds streamed)."""
    if cap < 1:
        raise ValueError(f"balance cap must be >= 1 (got {cap})")
    rng = random.Random(seed)
    kept: list[int] = []
    for _, positions in _buckets(np.asarray(prices, dtype=np.float64)):
        bucket = positions.tolist()
        kept.extend(rng.sample(bucket, cap) if len(bucket) > cap else bucket)
    return kept


def sampled_positions(prices: np.ndarray, codes: np.ndarray, names: Sequence[str], sampling: Sampling,
                      seed: int) -> list[int]:
    """Positions kept by the recipe's sampling, cheapest bucket first, each bucket in source order.

    Args:
        prices: one price per item.
        codes: one category code per item (`names[code]` is its name).
        names: the category names.
        seed: the draw (``numpy.random.default_rng``).
    """
    prices = np.asarray(prices, dtype=np.float64)
    codes = np.asarray(codes, dtype=np.int64)
    weights = sampling.weights(names, np.bincount(codes, minlength=len(names)))
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    for dollars, positions in _buckets(prices):
        keep_all = sampling.keep_all_from is not None and dollars >= sampling.keep_all_from
        if keep_all or len(positions) <= sampling.cap:
            kept.extend(positions.tolist())
            continue
        w = weights[codes[positions]]
        chosen = rng.choice(len(positions), size=sampling.cap, replace=False, p=w / w.sum())
        kept.extend(positions[np.sort(chosen)].tolist())
    return kept


def counts_by_band(prices: np.ndarray) -> dict[str, int]:
    """Items per price band (`pricer.metrics.price_band`, on arrays), every band listed."""
    index = np.searchsorted(PRICE_BANDS, np.asarray(prices, dtype=np.float64), side="right") - 1
    n = np.bincount(np.clip(index, 0, len(BAND_NAMES) - 1), minlength=len(BAND_NAMES))
    return {name: int(k) for name, k in zip(BAND_NAMES, n, strict=True)}


def counts_by_category(codes: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    """Items per category, most first (ties by name)."""
    n = np.bincount(np.asarray(codes, dtype=np.int64), minlength=len(names))
    return {names[c]: int(n[c]) for c in sorted(range(len(names)), key=lambda c: (-n[c], names[c])) if n[c]}
