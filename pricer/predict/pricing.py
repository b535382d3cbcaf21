"""Pricing a retailer's product table: every row kept, the price added, unreadable rows written
without one (`pricer predict --input`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pricer.data.tables import NO_ANSWER, Columns, Table, texts_of, write_priced
from pricer.predict.predictor import Predictor


@dataclass(frozen=True)
class PricingReport:
    """What `price_table` wrote.

    Args:
        problems: (row number, why) of every row written without a price.
    """

    out: Path
    rows: int
    priced: int
    problems: list[tuple[int, str]]


def price_table(predictor: Predictor, table: Table, out: str | Path, *, columns: Columns | None = None,
                batch_size: int = 32, progress: bool = True) -> PricingReport:
    """Price every row of a product table (`read_table`) with one loaded predictor and write the
    table with the price added (`write_priced`); unreadable rows are written too, with no price."""
    pairs = texts_of(table, columns or Columns())
    readable = [i for i, (row, _) in enumerate(pairs) if not row.problem]
    prices: list[float | None] = [None] * len(pairs)
    predicted = predictor.predict([pairs[i][1] for i in readable], batch_size=batch_size, progress=progress)
    for i, price in zip(readable, predicted, strict=True):
        prices[i] = price
    rows = [row for row, _ in pairs]
    path = write_priced(out, table.header, rows, prices)
    problems = [(row.number, row.problem or NO_ANSWER)
                for row, price in zip(rows, prices, strict=True) if price is None]
    return PricingReport(path, len(rows), len(rows) - len(problems), problems)
