"""Curated splits on disk: `build` a source into a `datasets.DatasetDict`, load it back.

`load_splits` also takes a jsonl and curates it on the fly with the same deterministic split,
so every command that wants data accepts a built folder or a file alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from pricer.data.corpus import Corpus, Curation, curate
from pricer.data.curate import SPLITS, Dropped, item_from_curated
from pricer.data.neighbors import FOLDER as NEIGHBORS
from pricer.data.neighbors import index_of_split
from pricer.data.readers import read_items
from pricer.data.sampling import Sampling, counts_by_band, counts_by_category
from pricer.data.sources import content_key, expand_all, is_url
from pricer.data.tables import Columns
from pricer.errors import DataError, PricerError
from pricer.items import Item
from pricer.machine import usable_cores

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
        source: the sources, comma-separated (`sources` lists them).
        lines: source lines read (good and bad).
        kept: items in all splits together.
        dropped: count per reason (``bad_json``, ``no_price``, ``duplicate``, ``over_bucket_cap``...).
        splits: price stats per split name.
        categories: item count per category over all splits (after sampling).
        categories_before: the same after de-duplication, before balancing or sampling.
        bands / bands_before: item count per price band, after and before.
        key: the cache key of the sources' content and the settings (`pricer.data.sources.content_key`).
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
    sources: list[str] = field(default_factory=list)
    sampling: dict | None = None
    categories_before: dict[str, int] = field(default_factory=dict)
    bands_before: dict[str, int] = field(default_factory=dict)
    bands: dict[str, int] = field(default_factory=dict)
    key: str = ""
    workers: int = 1
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kept != sum(s.n for s in self.splits.values()):
            raise ValueError("BuildReport: kept must equal the sum of the split sizes")

    def to_dict(self) -> dict:
        return asdict(self)


def _report(sources: list[str], corpus: Corpus, curation: Curation, key: str, workers: int,
            seconds: float) -> BuildReport:
    kept = corpus.kept
    return BuildReport(
        source=", ".join(sources), out=None, seed=curation.seed, balance=curation.balance, lines=corpus.lines,
        kept=len(kept), dropped=dict(sorted(corpus.drops.items())),
        splits={name: PriceStats.of(corpus.prices[positions].tolist()) for name, positions in corpus.splits.items()},
        categories=counts_by_category(corpus.codes[kept], corpus.names), sources=list(sources),
        sampling=None if curation.sampling is None else curation.sampling.to_dict(),
        categories_before=counts_by_category(corpus.codes[corpus.unique], corpus.names),
        bands_before=counts_by_band(corpus.prices[corpus.unique]), bands=counts_by_band(corpus.prices[kept]),
        key=key, workers=workers, seconds=round(seconds, 3))


_FEATURES = {"title": "string", "category": "string", "price": "float64", "text": "string", "details": "string"}
WRITE_BATCH = 2_000  # items per Arrow record batch while the splits are written


def _write_splits(corpus: Corpus, scratch: Path, *, in_memory: bool) -> DatasetDict:
    """The splits as Arrow files in `scratch`, streamed from the scratch shards in batches."""
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets.arrow_writer import ArrowWriter

    features = Features({name: Value(kind) for name, kind in _FEATURES.items()})
    data = {}
    for name, positions in corpus.splits.items():
        path = scratch / f"{name}.arrow"
        with ArrowWriter(features=features, path=str(path), writer_batch_size=WRITE_BATCH) as writer:
            batch: dict[str, list] = {c: [] for c in COLUMNS}
            for n, item in enumerate(corpus.items(positions), start=1):
                for c in COLUMNS:
                    batch[c].append(getattr(item, c))
                if n % WRITE_BATCH == 0:
                    writer.write_batch(batch)
                    batch = {c: [] for c in COLUMNS}
            if batch["title"] or not positions:
                writer.write_batch(batch)
            writer.finalize()
        data[name] = Dataset.from_file(str(path), in_memory=in_memory)
    return DatasetDict(data)


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


def _as_list(source: str | Path | Sequence[str | Path]) -> list[str | Path]:
    return [source] if isinstance(source, (str, Path)) else list(source)


def build(source: str | Path | Sequence[str | Path], out: Path | None, *, limit: int | None = None,
          seed: int = 42, balance: int | None = None, sampling: Sampling | None = None,
          workers: int | None = None, progress: bool = True, columns: Columns | None = None) -> BuildReport:
    """Curate one or several sources into train / validation / test and save it to `out`.

    Sources are read in the order given by `workers` processes, each curating a shard (a byte range
    of a local jsonl, or a whole URL or table) to a scratch file beside `out`; the parent keeps
    a few numbers per item, de-duplicates across all sources (the first copy wins), balances or
    samples, splits, then streams the splits into a `DatasetDict` (``save_to_disk``). The same
    sources and settings give the same splits whatever `workers` is.

    Args:
        source: a path, URL or ``amazon2023:<Category>``, or a list of them: raw Amazon 2023
            metadata or curated jsonl, local or ``hf://`` URL, or a product table (``.csv``,
            ``.parquet``).
        out: folder for the `DatasetDict` plus ``build_summary.json``; None only reports.
        limit: read at most this many lines of each source.
        seed: the split hash, the shuffle and the sampling.
        balance: at most this many items per whole-dollar price bucket (None keeps all).
        sampling: the recipe's category-weighted sampling instead of `balance`.
        workers: curating processes (default: the machine's cores).
        progress: tqdm bars while curating and saving.
        columns: the text and price columns of a CSV / Parquet / jsonl product table.

    Raises:
        DataError: a missing (named) or unreadable source, an unknown category, nothing usable,
            or `out` is a file.
    """
    sources = expand_all(_as_list(source))
    curation = Curation(limit=limit, seed=seed, balance=balance, sampling=sampling, columns=columns)
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise DataError(f"{out}: exists and is not a folder; choose another --out")
    key = content_key(sources, curation.key())
    workers = usable_cores() if workers is None else workers
    started = time.perf_counter()
    with _scratch(out) as scratch:
        corpus = curate(sources, curation, scratch, workers=workers, progress=progress)
        report = _report(sources, corpus, curation, key, workers, 0.0)
        if out is None:
            return replace(report, seconds=round(time.perf_counter() - started, 3))
        data = _write_splits(corpus, scratch, in_memory=False)
        _save(data, out, progress)
        if len(data["train"]):  # the train split's neighbour index, cached with the data under the same key
            index_of_split(data["train"]).save(out / NEIGHBORS)
        del data
    report = replace(report, out=str(out), seconds=round(time.perf_counter() - started, 3))
    (out / SUMMARY_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


@contextlib.contextmanager
def _scratch(out: Path | None) -> Iterator[Path]:
    """A scratch folder in the nearest existing folder above `out` (the same disk, which holds the
    result anyway; /tmp may be small or in memory), removed afterwards; nothing else is created."""
    parent = None if out is None else next(p for p in out.resolve().parents if p.is_dir())
    folder = Path(tempfile.mkdtemp(prefix=".pricer-build-", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cached_build(source: str | Path | Sequence[str | Path], root: Path, *, limit: int | None = None,
                 seed: int = 42, balance: int | None = None, sampling: Sampling | None = None,
                 workers: int | None = None, progress: bool = True) -> Path:
    """The built dataset of these sources and settings under `root` (``data-<key>``), built once.

    The key covers the sources' content (size and modification time of a local file), the
    settings and the curation version, so a changed source or setting builds anew. Several
    processes may call this at once (workers of one study started together): a file lock lets
    one build while the others wait and then read its folder, as `pricer.model.catalog` does for
    converted models; the build goes to a scratch folder renamed into place, so a killed build
    leaves nothing half-written under the key.
    """
    sources = expand_all(_as_list(source))
    curation = Curation(limit=limit, seed=seed, balance=balance, sampling=sampling)
    out = Path(root).resolve() / f"data-{content_key(sources, curation.key())}"
    if _is_built(out):
        return out
    made_root = not out.parent.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.with_name(f".{out.name}.lock")
    try:
        with FileLock(lock):
            if _is_built(out):  # built by the process that held the lock before
                return out
            partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            try:
                build(sources, partial, limit=limit, seed=seed, balance=balance, sampling=sampling,
                      workers=workers, progress=progress)
                os.replace(partial, out)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    except PricerError:
        # bad input leaves nothing behind: not the lock, not a root this call made
        lock.unlink(missing_ok=True)
        if made_root:
            with contextlib.suppress(OSError):
                out.parent.rmdir()
        raise
    return out


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
    curation = Curation(seed=seed)
    with _scratch(None) as scratch:
        corpus = curate(expand_all([path]), curation, scratch, workers=1)
        return _write_splits(corpus, scratch, in_memory=True)


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
