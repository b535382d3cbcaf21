"""One worker's share of a build: a shard of a source (a byte range of a local jsonl, or a whole
URL or table), curated to a scratch jsonl, with a few numbers per item sent back.

The parent never holds the items: for each one it keeps two 64-bit keys (the title and the text,
for de-duplication), the price, the category, the split and where the item sits in the scratch
file. The items are read back from there once the splits are chosen.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pricer.data.curate import SPLITS, split_of
from pricer.data.readers import (
    category_of,
    curate_records,
    parse_lines,
    range_lines,
    read_items,
    reads_as_table,
)
from pricer.data.sources import is_url
from pricer.data.tables import Columns
from pricer.items import Item

# A local jsonl is cut into about 4 shards per worker (so a slow shard doesn't idle the others),
# each between these sizes: small shards cost a task each, big ones a long tail.
MIN_SHARD_BYTES = 16 << 20
MAX_SHARD_BYTES = 256 << 20
SHARDS_PER_WORKER = 4
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".zip")


@dataclass(frozen=True)
class Shard:
    """A part of one source: bytes [start, end) of a local jsonl, or the whole source (end None).

    Args:
        index: the shard's place in reading order (sources in the order given, then bytes).
        limit: read at most this many lines (whole sources only).
    """

    index: int
    source: str
    start: int = 0
    end: int | None = None
    limit: int | None = None
    columns: Columns | None = None


@dataclass
class ShardResult:
    """What a worker sends back for one shard: counts, and one entry per curated item.

    Args:
        path: the scratch jsonl holding the shard's curated items, one per line.
        names: the category names that `codes` index.
        offsets: byte offset of each item's line in `path`.
        splits: index into `SPLITS` of each item (`split_of` its title with the build's seed).
    """

    index: int
    lines: int
    drops: dict[str, int]
    path: str
    names: list[str] = field(default_factory=list)
    title_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    text_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    prices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    splits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _splittable(source: str, limit: int | None, columns: Columns | None) -> bool:
    return (limit is None and not is_url(source) and not reads_as_table(source, columns)
            and not source.lower().endswith(_COMPRESSED))


def assign_shards(sources: list[str], *, workers: int, limit: int | None = None,
                columns: Columns | None = None, min_bytes: int = MIN_SHARD_BYTES) -> list[Shard]:
    """The shards of `sources` in reading order. A local uncompressed jsonl read whole is cut into
    byte ranges; a URL, a table, a compressed file or a `limit`-ed read is one shard."""
    shards: list[Shard] = []
    for source in sources:
        if not _splittable(source, limit, columns):
            shards.append(Shard(len(shards), source, limit=limit, columns=columns))
            continue
        size = Path(source).stat().st_size
        target = min(max(math.ceil(size / (SHARDS_PER_WORKER * max(workers, 1))), min_bytes), MAX_SHARD_BYTES)
        for start in range(0, max(size, 1), target):
            shards.append(Shard(len(shards), source, start, min(start + target, size)))
    return shards


def key64(text: str) -> int:
    """A 64-bit key of a string (blake2b): collisions among 10 million keys have odds ~3e-6."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big")


def _items(shard: Shard, drops: Counter, progress: bool) -> Iterator[Item]:
    if shard.end is None:  # a whole URL streams for minutes: its own line bar says how far it got
        return read_items(shard.source, shard.limit, drops=drops, columns=shard.columns, progress=progress)
    lines = range_lines(shard.source, shard.start, shard.end, drops)
    return curate_records(parse_lines(lines, drops), category_of(shard.source), drops)


def curate_shard(shard: Shard, scratch: str, seed: int, progress: bool = False) -> ShardResult:
    """Curate one shard into ``<scratch>/shard-<index>.jsonl``; runs in a worker process.

    Raises:
        DataError: the source can't be read (a URL offline, a table without the named columns).
    """
    drops: Counter = Counter()
    path = Path(scratch) / f"shard-{shard.index:06d}.jsonl"
    names: dict[str, int] = {}
    title_keys, text_keys, prices, codes, splits, offsets = [], [], [], [], [], []
    split_code = {name: n for n, name in enumerate(SPLITS)}
    offset = 0
    with open(path, "wb") as out:
        for item in _items(shard, drops, progress):
            line = (json.dumps(item.to_dict()) + "\n").encode("ascii")
            out.write(line)
            title_keys.append(key64(item.title.casefold()))
            text_keys.append(key64(item.text))
            prices.append(item.price)
            codes.append(names.setdefault(item.category, len(names)))
            splits.append(split_code[split_of(item.title, seed)])
            offsets.append(offset)
            offset += len(line)
    return ShardResult(
        index=shard.index, lines=len(prices) + sum(drops.values()), drops=dict(drops), path=str(path),
        names=list(names), title_keys=np.array(title_keys, np.uint64), text_keys=np.array(text_keys, np.uint64),
        prices=np.array(prices, np.float64), codes=np.array(codes, np.int32), splits=np.array(splits, np.uint8),
        offsets=np.array(offsets, np.int64))
