"""A fraction of the train split for low-fidelity trials: the same items for every trial.

Items are ordered by a seeded hash of their text and the first ``ceil(fraction * n)`` are kept,
in their original order. The order does not depend on the fraction, so the 10 % subset lies
inside the 25 % one (nested), and it does not depend on a trial's own seed, so every trial of a
study searching on a fraction sees the same items.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Annotated, TypeVar

from pydantic import Field, TypeAdapter, ValidationError

from pricer.declared import one_line
from pricer.errors import SpecError

T = TypeVar("T")


# A share of the train split, in (0, 1]: the type of every declared train fraction.
Fraction = Annotated[float, Field(gt=0, le=1)]
_FRACTION = TypeAdapter(Fraction)


def check_fraction(fraction: object, name: str = "train_fraction") -> float:
    """`fraction` as a float in (0, 1].

    Raises:
        SpecError: not a number, or outside (0, 1], naming `name`.
    """
    try:
        return _FRACTION.validate_python(fraction)
    except ValidationError as exc:
        raise SpecError(one_line(exc, name)) from None


def _rank(text: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\0{text}".encode(), digest_size=8).digest()


def fraction_indices(texts: Sequence[str], fraction: float, seed: int = 0) -> list[int]:
    """Indices of the kept items, ascending.

    Args:
        texts: each item's text (what makes an item itself; the hash key).
        fraction: in (0, 1]; 1 keeps everything.
        seed: another seed draws another subset.
    """
    fraction = check_fraction(fraction)
    n = len(texts)
    if fraction >= 1 or n == 0:
        return list(range(n))
    keep = max(1, math.ceil(fraction * n))
    order = sorted(range(n), key=lambda i: (_rank(texts[i], seed), i))
    return sorted(order[:keep])


def train_subset(items: Sequence[T], fraction: float, seed: int = 0) -> list[T]:
    """The items of `fraction_indices` (items with a ``text`` attribute, e.g. `pricer.items.Item`)."""
    return [items[i] for i in fraction_indices([item.text for item in items], fraction, seed)]
