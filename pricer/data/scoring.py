"""The rows an evaluation scores: every row of a file that has a price and a text.

Training's curation filters (a minimum text length, the [$0.50, $999.49] price range) decide what
a model learns from, not what it is judged on. A retailer's catalog of short descriptions, scored
with those filters, lost 275 of 290 rows as ``too_short`` and 15 as ``price_out_of_range``, while
``pricer predict`` priced all 290. Here every priced row is kept; those outside the training
range are flagged so their error is reported on its own, and the rows that can't be read are
listed with their row number and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pricer.data.curate import Dropped, in_training_range, item_to_score
from pricer.data.readers import category_of, is_url, iter_lines
from pricer.data.tables import SUFFIXES, Columns, Table, jsonl_table, raw_record, read_table
from pricer.errors import DataError
from pricer.items import Item


@dataclass(frozen=True)
class ScoringSet:
    """What a file offers to score.

    Args:
        items: every readable row with a price, in file order.
        rows: each item's 1-based row number in the file.
        unreadable: (row number, why) of every row that could not be scored.
    """

    source: str
    items: list[Item]
    rows: list[int]
    unreadable: list[tuple[int, str]]

    def __post_init__(self) -> None:
        if len(self.items) != len(self.rows):
            raise ValueError("ScoringSet: one row number per item")

    @property
    def in_range(self) -> list[bool]:
        """Per item: whether its price is in the range training data is curated to."""
        return [in_training_range(i.price) for i in self.items]


def scoring_items(path: str | Path, columns: Columns | None = None, *, limit: int | None = None) -> ScoringSet:
    """Every scorable row of a jsonl (raw Amazon metadata, curated items, or any table with
    `columns`), CSV or Parquet file, or a built dataset folder's test split.

    Args:
        columns: the text and price columns (default: the Amazon fields, or a curated ``text``).
        limit: read at most this many rows.

    Raises:
        DataError: a missing file, a missing price or text column, or no row that can be scored
            (the message counts the reasons).
    """
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be >= 1 (got {limit})")
    if not is_url(path) and Path(path).is_dir():
        from pricer.data.dataset import load_items

        items = load_items(path)[:limit]
        return ScoringSet(str(path), items, list(range(1, len(items) + 1)), [])
    table = _table(path)
    columns = columns or Columns()
    text = columns.items_of(table, path)
    curated = not text
    category = category_of(path)
    items, numbers, unreadable = [], [], []
    for row in table.rows[:limit]:
        if row.problem:
            unreadable.append((row.number, row.problem))
            continue
        record = row.values if curated else _record(row.values, text, columns.price)
        try:
            items.append(item_to_score(record, category))
            numbers.append(row.number)
        except Dropped as dropped:
            unreadable.append((row.number, str(dropped)))
    if not items:
        reasons = sorted({why.split(":")[0] for _, why in unreadable})
        raise DataError(f"{path}: no row has a price and a text ({len(unreadable)} unreadable: "
                        f"{', '.join(reasons) or 'the file is empty'}); pass --price-column / --text-columns")
    return ScoringSet(str(path), items, numbers, unreadable)


def _table(path: str | Path) -> Table:
    """CSV, Parquet or jsonl by suffix; any other local or remote file is read as jsonl lines."""
    if not is_url(path) and Path(path).suffix.lower() in SUFFIXES:
        return read_table(path)
    return jsonl_table(iter_lines(path))


def _record(values: dict, text: tuple[str, ...], price: str) -> dict:
    """A table row as the raw record curation reads; raw Amazon metadata keeps its main_category."""
    record = raw_record(values, text, price)
    if record["main_category"] is None:
        record["main_category"] = values.get("main_category")
    return record
