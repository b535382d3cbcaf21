"""Curated splits on disk: `build` a source into a `datasets.DatasetDict`, load it back.

`load_splits` also takes a jsonl and curates it on the fly with the same deterministic split,
so every command that wants data accepts a built folder or a file alike.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.data.curate import SPLITS, Dropped, balance, dedupe, item_from_curated, split_items
from pricer.data.readers import is_url, read_items
from pricer.data.tables import Columns
from pricer.errors import DataError
from pricer.items import Item

if TYPE_CHECKING:
    from datasets import DatasetDict

SUMMARY_FILE = "build_summary.json"
COLUMNS = ("title", "category", "price", "text", "details")


@dataclass(frozen=True)
class PriceStats:
    """Price summary of one split (all zero when the split is empty)."""

    n: int
    min: float = 0.0
    median: float = 0.0
    mean: float = 0.0
    max: float = 0.0

    @classmethod
    def of(cls, prices: list[float]) -> PriceStats:
        if not prices:
            return cls(n=0)
        return cls(n=len(prices), min=min(prices), median=statistics.median(prices),
                   mean=statistics.fmean(prices), max=max(prices))


@dataclass(frozen=True)
class BuildReport:
    """What `build` read, kept and dropped.

    Args:
        lines: source lines read (good and bad).
        kept: items in all splits together.
        dropped: count per reason (``bad_json``, ``no_price``, ``duplicate``...).
        splits: price stats per split name.
        categories: item count per category over all splits.
    """

    source: str
    out: str | None
    seed: int
    balance: int | None
    lines: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    splits: dict[str, PriceStats] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kept != sum(s.n for s in self.splits.values()):
            raise ValueError("BuildReport: kept must equal the sum of the split sizes")

    def to_dict(self) -> dict:
        return asdict(self)


def _curate(source: str | Path, *, limit: int | None, seed: int, balance_cap: int | None,
            progress: bool, columns: Columns | None = None) -> tuple[dict[str, list[Item]], BuildReport]:
    drops: Counter = Counter()
    items = list(dedupe(read_items(source, limit, drops=drops, progress=progress, columns=columns), drops))
    # Every line read is either kept or counted under one reason.
    lines = len(items) + sum(drops.values())
    if balance_cap is not None:
        items = balance(items, balance_cap, seed, drops)
    if not items:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "the source is empty"
        raise DataError(f"{source}: no usable items ({reasons})")
    splits = split_items(items, seed)
    report = BuildReport(
        source=str(source), out=None, seed=seed, balance=balance_cap, lines=lines, kept=len(items),
        dropped=dict(sorted(drops.items())),
        splits={name: PriceStats.of([i.price for i in splits[name]]) for name in SPLITS},
        categories=dict(Counter(i.category for i in items).most_common()),
    )
    return splits, report


def _to_dataset_dict(splits: dict[str, list[Item]]) -> DatasetDict:
    from datasets import Dataset, DatasetDict, Features, Value

    features = Features({"title": Value("string"), "category": Value("string"),
                         "price": Value("float64"), "text": Value("string"),
                         "details": Value("string")})
    return DatasetDict({
        name: Dataset.from_dict({c: [getattr(i, c) for i in items] for c in COLUMNS}, features=features)
        for name, items in splits.items()
    })


def _save(data: DatasetDict, out: Path, progress: bool) -> None:
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # datasets has no per-call switch for its "Saving the dataset" bars, only a global one.
    quiet = not progress and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        # One shard per split even when empty: datasets saves an empty split as zero shards,
        # which load_from_disk then fails to read.
        data.save_to_disk(str(out), num_shards={name: 1 for name, split in data.items() if len(split) == 0})
    finally:
        if quiet:
            enable_progress_bars()


def build(source: str | Path, out: Path | None, *, limit: int | None = None, seed: int = 42,
          balance: int | None = None, progress: bool = True, columns: Columns | None = None) -> BuildReport:
    """Curate `source` into train / validation / test and save it to `out` (``save_to_disk``).

    Args:
        source: raw Amazon 2023 metadata or curated jsonl, local or ``hf://`` URL, or a
            product table (``.csv``, ``.parquet``).
        out: folder for the `DatasetDict` plus ``build_summary.json``; None only reports.
        limit: read at most this many source lines.
        seed: the split hash and the balanced sampling.
        balance: at most this many items per whole-dollar price bucket (None keeps all).
        progress: tqdm bar while reading.
        columns: the text and price columns of a CSV / Parquet / jsonl product table.

    Raises:
        DataError: missing/unreadable source, nothing usable in it, or `out` is a file.
    """
    splits, report = _curate(source, limit=limit, seed=seed, balance_cap=balance, progress=progress,
                             columns=columns)
    if out is None:
        return report
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose another --out")
    _save(_to_dataset_dict(splits), out, progress)
    report = replace(report, out=str(out))
    (out / SUMMARY_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _is_built(path: Path) -> bool:
    return path.is_dir() and (path / "dataset_dict.json").is_file()


def load_splits(path: str | Path, seed: int = 42) -> DatasetDict:
    """A built folder as saved by `build`, or a jsonl curated and split on the fly (same split).

    Args:
        seed: the split of a jsonl; a built folder keeps the seed it was built with.

    Raises:
        DataError: the path is neither a built folder nor a readable jsonl.
    """
    if not is_url(path) and Path(path).is_dir():
        if not _is_built(Path(path)):
            raise DataError(f"{path}: not a built dataset (no dataset_dict.json); "
                            f"run `pricer data build --source SOURCE --out {path}`")
        from datasets import load_from_disk

        data = load_from_disk(str(path))
        missing = [s for s in SPLITS if s not in data]
        if missing:
            raise DataError(f"{path}: built dataset lacks split(s) {', '.join(missing)}; rebuild it")
        return data
    splits, _ = _curate(path, limit=None, seed=seed, balance_cap=None, progress=False)
    return _to_dataset_dict(splits)


def load_items(path: str | Path, columns: Columns | None = None) -> list[Item]:
    """Items from any jsonl or product table a reader accepts (curated, not de-duplicated), or a
    built folder's test split.

    Raises:
        DataError: missing path, or no usable item in it.
    """
    if not is_url(path) and Path(path).is_dir():
        test = load_splits(path)["test"]
        return as_items(test)
    drops: Counter = Counter()
    items = list(read_items(path, drops=drops, columns=columns))
    if not items:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "the file is empty"
        raise DataError(f"{path}: no usable items ({reasons})")
    return items


def as_items(rows: Iterable[Item | Mapping]) -> list[Item]:
    """Items from Item objects or dataset rows (title, category, price, text, details), each row
    checked as curation checks a curated record (`pricer.data.curate.item_from_curated`).

    Raises:
        DataError: a row curation would have dropped (a dataset not written by `build`, or edited since).
    """
    items = []
    for n, row in enumerate(rows):
        if isinstance(row, Item):
            items.append(row)
            continue
        try:
            items.append(item_from_curated(dict(row)))
        except Dropped as exc:
            raise DataError(f"dataset row {n}: {exc}; rebuild the data with `pricer data build`") from None
    return items
