"""Opening the stores a study writes to (the Optuna storage, the MLflow store) while other
workers do the same. Their URLs are `sweeps.spec.urls`'."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def retried(call: Callable[[], T], *, attempts: int, errors: tuple[type[BaseException], ...]) -> T:
    """``call()``, tried again after 1, 2, 3... s when it raises one of `errors`; the last try's
    error propagates. For a race that settles by itself: workers started together on a fresh
    database all create its tables, and the losers find them made a moment later."""
    for attempt in range(attempts):
        try:
            return call()
        except errors:
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise ValueError(f"attempts must be >= 1 (got {attempts})")
