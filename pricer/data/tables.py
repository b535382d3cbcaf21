"""A retailer's own product table: jsonl, CSV or Parquet, with a mapping of its columns.

The text columns become a product text exactly as curation builds one from Amazon metadata (the
first column is the title, the others the description, ``details`` stripped of its boilerplate,
then scrubbed), so a catalog reads like the training prompts. Rows that can't be read (bad JSON,
a CSV line with the wrong number of fields, no text at all) are kept with their problem: pricing
writes them with an empty price, building counts them as dropped, never silently.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from pricer.atomic import replacing
from pricer.data.curate import (
    Dropped,
    has_words,
    is_curated,
    item_from_curated,
    item_from_raw,
    product_text,
    raw_contents,
    strings_of,
)
from pricer.declared import Problems, declared
from pricer.errors import DataError
from pricer.items import Item

SUFFIXES = (".jsonl", ".csv", ".parquet")
# the Amazon metadata's own text fields, in the order curation reads them
DEFAULT_TEXT = ("title", "description", "features", "details")
PREDICTED = "predicted_price"
# the range around it, when the folder reads prices by median decoding (`pricer.predict.intervals`)
LOW, HIGH = "price_low", "price_high"
PROBLEM = "predict_problem"
BAD_ROW = "bad_row"
NO_ANSWER = "the model wrote no price"


@declared("columns")
class Columns:
    """Which columns of a table hold a product's text and its price.

    Args:
        text: text columns in prompt order, the first one the title; empty takes those of
            `DEFAULT_TEXT` the table has (or a curated ``text`` column as it is).
        price: the price column (building and evaluating; pricing keeps it untouched).
    """

    text: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    price: Annotated[str, Field(min_length=1)] = "price"

    @model_validator(mode="after")
    def _distinct(self) -> Columns:
        problems = Problems()
        if len(set(self.text)) != len(self.text):
            problems.add(("text",), f"each column once (got {','.join(self.text)!r})")
        if self.price in self.text:
            problems.add(("price",), f"{self.price!r} is also a text column; a model must not read the price")
        problems.check()
        return self

    @classmethod
    def parse(cls, text: str | None = None, price: str | None = None) -> Columns:
        """From the CLI's ``--text-columns title,description`` and ``--price-column``."""
        names = tuple(n.strip() for n in text.split(",")) if text else ()
        return cls(text=names, price=price or "price")

    def resolve(self, header: Sequence[str]) -> tuple[str, ...]:
        """The text columns for a table with this header (DataError names what is missing)."""
        if self.text:
            missing = [c for c in self.text if c not in header]
            if missing:
                raise DataError(f"text column(s) {', '.join(missing)} not in the table "
                                f"(its columns: {', '.join(header)}); pass --text-columns")
            return self.text
        found = tuple(c for c in DEFAULT_TEXT if c in header)
        if found[:1] == ("title",):
            return found
        if "text" in header:
            return ("text",)
        raise DataError(f"no title or text column in the table (its columns: {', '.join(header)}); "
                        "name the product text columns with --text-columns title,description,...")

    def text_of(self, table: Table) -> tuple[str, ...]:
        """The text columns `table`'s rows are read by; () for rows written by curation (a
        ``text`` column and no raw description: read as they are) unless `text` names others."""
        if not self.text and curated_rows(table):
            return ()
        return self.resolve(table.header)

    def items_of(self, table: Table, path: str | Path) -> tuple[str, ...]:
        """`text_of`, for reading `table` (the file at `path`) as items: its price column must exist."""
        text = self.text_of(table)
        if text and self.price not in table.header:
            raise DataError(f"{path}: no price column {self.price!r} (its columns: {', '.join(table.header)}); "
                            "pass --price-column")
        return text


@dataclass(frozen=True)
class Row:
    """One row as read: its values (what could be read of it) and why it can't be used, if so.

    Args:
        number: 1-based row number (a jsonl or CSV data line; blank jsonl lines are not rows).
    """

    number: int
    values: dict
    problem: str = ""


@dataclass
class Table:
    """A whole table: its column names (in file order) and every row."""

    header: list[str]
    rows: list[Row] = field(default_factory=list)


def read_table(path: str | Path) -> Table:
    """Read a ``.jsonl``, ``.csv`` or ``.parquet`` file.

    Raises:
        DataError: missing file or an unknown suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: expected one of {', '.join(SUFFIXES)}")
    return reader(path)


def _read_jsonl(path: Path) -> Table:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return jsonl_table(handle)


def jsonl_table(lines: Iterable[str]) -> Table:
    """The rows of jsonl lines (a file, or `pricer.data.readers.iter_lines` of a URL)."""
    header: dict[str, None] = {}
    rows = []
    for line in lines:
        if not line.strip():
            continue
        number = len(rows) + 1
        try:
            values = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(Row(number, {}, f"{BAD_ROW}: not JSON ({exc.msg})"))
            continue
        if not isinstance(values, dict):
            rows.append(Row(number, {}, f"{BAD_ROW}: not a JSON object"))
            continue
        header.update(dict.fromkeys(values))
        rows.append(Row(number, values))
    return Table(list(header), rows)


def _read_csv(path: Path) -> Table:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.DictReader(handle)
        header = list(reader.fieldnames or [])
        rows = []
        try:
            for values in reader:
                extra = values.pop(None, None)  # fields beyond the header
                short = [k for k, v in values.items() if v is None]
                problem = ""
                if extra or short:
                    got = len(header) - len(short) + len(extra or [])
                    problem = f"{BAD_ROW}: {got} fields, the header has {len(header)} (line {reader.line_num})"
                rows.append(Row(len(rows) + 1, {k: v for k, v in values.items() if v is not None}, problem))
        except csv.Error as exc:
            raise DataError(f"{path}: line {reader.line_num}: can't read on ({exc})") from None
    return Table(header, rows)


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    return Table(table.column_names, [Row(i + 1, values) for i, values in enumerate(table.to_pylist())])


_READERS: dict[str, Callable[[Path], Table]] = {".jsonl": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}


def raw_record(values: Mapping, text: Sequence[str], price: str) -> dict:
    """A row as the raw Amazon record curation reads: title, the other text columns as the
    description (``details`` as details), the price and the category if the table has one."""
    record = {"title": values.get(text[0]), "price": values.get(price), "main_category": values.get("category"),
              "description": [s for c in text[1:] if c != "details" for s in strings_of(values.get(c))]}
    if "details" in text[1:]:
        record["details"] = values.get("details")
    return record


def product_of(values: Mapping, text: Sequence[str]) -> str:
    """The prompt text of one row: a curated ``text`` column as it is, else built as curation
    builds it. Empty when the row has no text at all."""
    if text == ("text",):
        value = values.get("text")
        return value.strip() if isinstance(value, str) else ""
    record = raw_record(values, text, "")
    title = " ".join(strings_of(record["title"]))
    contents = raw_contents(record)
    if not title.strip() and not contents.strip():
        return ""
    return product_text(title, contents)


def curated_rows(table: Table) -> bool:
    """Rows written by curation (``text`` and no raw description): read as curated items."""
    return "text" in table.header and is_curated(dict.fromkeys(table.header))


def texts_of(table: Table, columns: Columns) -> list[tuple[Row, str]]:
    """Each row with its prompt text; a row's problem is set where there is no text to price."""
    text = columns.text_of(table) or ("text",)
    out = []
    for row in table.rows:
        product = "" if row.problem else product_of(row.values, text)
        if not row.problem and not has_words(product):
            row = Row(row.number, row.values, f"no text in {', '.join(text)}")
        out.append((row, product))
    return out


def write_priced(path: str | Path, header: Sequence[str], rows: Sequence[Row], prices: Sequence[float | None],
                 ranges: Sequence[tuple[float, float] | None] | None, problems: Sequence[str]) -> Path:
    """The table again, every row in its order with the user's columns, plus `PREDICTED` (empty
    where there is no price), with `ranges` `LOW` and `HIGH`, and `PROBLEM` (why there is no
    price, `pricer.predict.pricing.price_rows`). ``.csv``, ``.jsonl`` or ``.parquet`` by suffix."""
    path = Path(path)
    suffix = out_format(path)
    added = [PREDICTED, *([LOW, HIGH] if ranges is not None else []), PROBLEM]
    columns = [c for c in header if c not in added] + added
    records = []
    for i, (row, price, problem) in enumerate(zip(rows, prices, problems, strict=True)):
        record = {**{c: row.values.get(c) for c in header}, PREDICTED: price}
        if ranges is not None:
            record[LOW], record[HIGH] = ranges[i] or (None, None)
        records.append({**record, PROBLEM: problem})
    # written beside and moved into place: --out may be the input file, and a failure halfway
    # (a full disk) must leave it whole
    with replacing(path) as tmp:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(records), tmp)
        elif suffix == ".jsonl":
            with tmp.open("w", encoding="utf-8") as handle:
                for record in records:
                    handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        else:
            with tmp.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                for record in records:
                    writer.writerow({k: _cell(v) for k, v in record.items()})
    return path


def out_format(path: Path) -> str:
    """The suffix of a priced table's path; DataError for one pricing can't write (checked before
    a model is loaded, so a typo costs no minutes)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"--out {path}: expected one of {', '.join(SUFFIXES)}")
    return suffix


def _cell(value: object) -> object:
    """A CSV cell: lists and objects as JSON, None as empty."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return value


def iter_items(path: str | Path, columns: Columns, drops: Counter, limit: int | None = None) -> Iterator[Item]:
    """Curated `Item`s of a table (for `pricer data build` and `pricer evaluate`); unreadable and
    rejected rows are counted in `drops` by reason, as the jsonl readers count theirs.

    Args:
        limit: read at most this many rows.
    """
    table = read_table(path)
    text = columns.items_of(table, path)
    curated = not text
    for row in table.rows[:limit]:
        if row.problem:
            drops[BAD_ROW] += 1
            continue
        try:
            yield (item_from_curated(row.values) if curated
                   else item_from_raw(raw_record(row.values, text, columns.price)))
        except Dropped as dropped:
            drops[dropped.reason] += 1
