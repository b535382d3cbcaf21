"""`pricer bench decode FOLDER --items FILE`: greedy against median decoding on one model folder.

Both read the same items with the same weights in one process, greedy first as the reference, so
the printed ratios (error, RMSLE, seconds) say what the median walk buys and what it costs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

from pricer.errors import SpecError
from pricer.predict.pricetree import DECODES


def bench_decode(folder: str | Path, items: Sequence, *, batch_size: int = 32) -> dict:
    """{"greedy": {...}, "median": {...}, "ratios": median / greedy} for a model folder."""
    from pricer.predict.predictor import evaluate, load_predictor

    predictor = load_predictor(folder)
    if not hasattr(predictor, "decode"):
        raise SpecError(f"{folder}: bench decode needs an adapter or merged folder, not kind {predictor.kind!r}")
    rows = {}
    for decode in DECODES:
        start = time.perf_counter()
        metrics = evaluate(dataclasses.replace(predictor, decode=decode), items, batch_size=batch_size)
        rows[decode] = {"mae": metrics.mae, "rmsle": metrics.rmsle, "hit_rate": metrics.hit_rate,
                        "misses": metrics.misses, "seconds": time.perf_counter() - start, "n": metrics.n}
    greedy, median = rows["greedy"], rows["median"]
    return {**rows, "ratios": {k: (median[k] / greedy[k] if greedy[k] else None)
                               for k in ("mae", "rmsle", "seconds")}}
