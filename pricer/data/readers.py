"""Readers for the two jsonl schemas: raw Amazon Reviews 2023 item metadata and curated items.

A source is a local path or any fsspec URL; with ``huggingface_hub`` installed that includes
``hf://datasets/McAuley-Lab/Amazon-Reviews-2023/raw/meta_categories/meta_<Category>.jsonl``,
streamed line by line (use `limit` to read only the first lines of a multi-GB category).
The schema is told per line, so one file may mix both. Bad lines are counted, never fatal.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from pricer.data.curate import (
    BAD_JSON,
    EMPTY_LINE,
    LINE_TOO_LONG,
    NOT_AN_OBJECT,
    Dropped,
    is_curated,
    item_from_curated,
    item_from_raw,
)
from pricer.data.sources import check_url, is_url, read_errors
from pricer.data.tables import Columns, iter_items
from pricer.errors import DataError
from pricer.items import Item

# longer lines are dropped unread (a raw Amazon 2023 line is a few KB, the longest ~1 MB): a stream
# with no newline would otherwise be read into memory whole
MAX_LINE_CHARS = 16 << 20
_META_FILE = re.compile(r"meta_([A-Za-z0-9_]+)\.jsonl(?:\.gz)?$")


def is_table(source: str | Path) -> bool:
    """A local ``.csv`` or ``.parquet`` file (a jsonl is a table only when columns are given)."""
    return not is_url(source) and Path(str(source)).suffix.lower() in (".csv", ".parquet")


def category_of(source: str | Path) -> str | None:
    """The category a ``meta_<Category>.jsonl`` file name carries, else None."""
    match = _META_FILE.search(str(source))
    return match.group(1) if match else None


def iter_lines(source: str | Path, limit: int | None = None, *, progress: bool = False,
               drops: Counter | None = None) -> Iterator[str]:
    """The source's lines (at most `limit`), without line endings. A line longer than
    `MAX_LINE_CHARS` is skipped in chunks, never held whole, and counted in `drops`.

    Raises:
        DataError: the local file is missing, the URL's scheme is not read, or the URL can't be
            opened or read.
    """
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be >= 1 (got {limit})")
    check_url(source)
    if not is_url(source):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such file (expected a jsonl of raw Amazon 2023 metadata "
                            "or curated items, or a built dataset folder)")
    import fsspec  # an hf:// URL needs huggingface_hub, which registers the protocol

    drops = Counter() if drops is None else drops
    try:
        # errors="replace": a stray bad byte becomes U+FFFD, which scrub() removes.
        with fsspec.open(str(source), "rt", encoding="utf-8", errors="replace",
                         compression="infer") as handle:
            bar = tqdm(total=limit, unit=" lines", desc=f"reading {Path(str(source)).name}",
                       disable=not progress, mininterval=0.5)
            n = 0
            while limit is None or n < limit:
                line = handle.readline(MAX_LINE_CHARS + 1)
                if not line:
                    break
                n += 1
                bar.update()
                if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                    while (rest := handle.readline(MAX_LINE_CHARS)) and not rest.endswith("\n"):
                        pass
                    drops[LINE_TOO_LONG] += 1
                    continue
                yield line.rstrip("\r\n")
            bar.close()
    except read_errors() as exc:
        raise DataError(f"{source}: can't read ({type(exc).__name__}: {exc})") from exc


def range_lines(path: str | Path, start: int, end: int, drops: Counter | None = None) -> Iterator[str]:
    """The lines of a local file that begin in bytes [start, end), without line endings; a line
    longer than `MAX_LINE_CHARS` bytes is skipped in chunks and counted in `drops`.

    Byte ranges that tile a file yield each of its lines exactly once, so several processes can
    read one file side by side: a line that began before `start` belongs to the range before.
    """
    drops = Counter() if drops is None else drops
    with open(path, "rb") as handle:
        if start > 0:
            handle.seek(start - 1)
            while (rest := handle.readline(MAX_LINE_CHARS)) and not rest.endswith(b"\n"):
                pass
        position = handle.tell()
        while position < end:
            line = handle.readline(MAX_LINE_CHARS + 1)
            if not line:
                break
            position += len(line)
            if len(line) > MAX_LINE_CHARS and not line.endswith(b"\n"):
                while (rest := handle.readline(MAX_LINE_CHARS)) and not rest.endswith(b"\n"):
                    position += len(rest)
                position += len(rest)
                drops[LINE_TOO_LONG] += 1
                continue
            # errors="replace": a stray bad byte becomes U+FFFD, which scrub() removes.
            yield line.decode("utf-8", errors="replace").rstrip("\r\n")


def parse_lines(lines: Iterable[str], drops: Counter) -> Iterator[dict]:
    """The JSON objects among `lines`; empty, corrupt and non-object lines go to `drops`."""
    for line in lines:
        if not line.strip():
            drops[EMPTY_LINE] += 1
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            drops[BAD_JSON] += 1
            continue
        if not isinstance(record, dict):
            drops[NOT_AN_OBJECT] += 1
            continue
        yield record


def curate_records(records: Iterable[dict], category: str | None, drops: Counter) -> Iterator[Item]:
    """Each raw or curated record as an `Item` (the schema told per record); rejects go to `drops`."""
    for record in records:
        try:
            yield item_from_curated(record) if is_curated(record) else item_from_raw(record, category)
        except Dropped as dropped:
            drops[dropped.reason] += 1


def iter_records(source: str | Path, limit: int | None = None, *, drops: Counter | None = None,
                 progress: bool = False) -> Iterator[dict]:
    """The JSON objects of a jsonl source; empty, corrupt and non-object lines go to `drops`."""
    drops = Counter() if drops is None else drops
    yield from parse_lines(iter_lines(source, limit, progress=progress, drops=drops), drops)


def read_items(source: str | Path, limit: int | None = None, *, drops: Counter | None = None,
               progress: bool = False, columns: Columns | None = None) -> Iterator[Item]:
    """Curated `Item`s from a raw-metadata or curated jsonl source, or a product table.

    Args:
        source: local path or fsspec URL (``hf://...``); a ``.csv`` or ``.parquet`` file, or any
            local file with `columns`, is read as a table (`pricer.data.tables`).
        limit: read at most this many source lines (good and bad alike).
        drops: a Counter that receives one count per dropped line, keyed by reason
            (``bad_json``, ``no_price``, ``too_short``...). No de-duplication here.
        progress: show a tqdm bar over the lines.
        columns: which columns hold the text and the price (tables only).
    """
    drops = Counter() if drops is None else drops
    if reads_as_table(source, columns):
        yield from iter_items(source, columns or Columns(), drops, limit)
        return
    yield from curate_records(iter_records(source, limit, drops=drops, progress=progress),
                              category_of(source), drops)


def reads_as_table(source: str | Path, columns: Columns | None) -> bool:
    """Whether `read_items` reads `source` as a product table rather than jsonl records."""
    return is_table(source) or (columns is not None and not is_url(source))
