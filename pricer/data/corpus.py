"""A build's curated corpus: the sources curated by worker processes into scratch files, then
de-duplicated, sampled and split on compact arrays; the items are read back split by split.

Memory stays bounded by numbers, not records: about 40 bytes per curated item in the parent
(two 64-bit keys, price, category, split, shard, offset) and one shard's numbers per worker. The
result does not depend on the number of workers: shards are merged in reading order, and every
choice after that (first copy kept, sampling, split, shuffle) is made on the merged arrays.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pricer.data.curate import DUPLICATE, OVER_BUCKET_CAP, SPLITS
from pricer.data.sampling import Sampling, balanced_positions, sampled_positions
from pricer.data.shards import MIN_SHARD_BYTES, ShardResult, assign_shards, curate_shard
from pricer.data.tables import Columns
from pricer.errors import DataError, SpecError
from pricer.items import Item


def default_workers() -> int:
    """The cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


@dataclass(frozen=True)
class Curation:
    """The settings that change what a build writes (all of them go into its cache key).

    Args:
        limit: read at most this many lines of each source.
        seed: the split hash, the shuffle and the sampling.
        balance: at most this many items per whole-dollar bucket, drawn uniformly.
        sampling: the recipe's category-weighted sampling (an alternative to `balance`).
        columns: the text and price columns of a product table.
    """

    limit: int | None = None
    seed: int = 42
    balance: int | None = None
    sampling: Sampling | None = None
    columns: Columns | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise DataError(f"--limit must be >= 1 (got {self.limit})")
        if self.balance is not None and self.balance < 1:
            raise SpecError(f"balance: must be a whole number >= 1 (got {self.balance})")
        if self.balance is not None and self.sampling is not None:
            raise SpecError("balance and sampling are alternatives (a uniform and a category-weighted "
                            "per-dollar cap); set one")

    def key(self) -> dict:
        """The settings as plain values, for the cache key and the build summary."""
        columns = None if self.columns is None else {"text": list(self.columns.text), "price": self.columns.price}
        return {"limit": self.limit, "seed": self.seed, "balance": self.balance,
                "sampling": None if self.sampling is None else self.sampling.to_dict(), "columns": columns}


@dataclass
class Corpus:
    """The curated items of a build as arrays (one entry per curated item, in reading order).

    Args:
        lines: source lines read, good and bad.
        drops: count per reason, duplicates and sampling included.
        names: category names; `codes` index them.
        unique: positions of the items left after de-duplication (before sampling).
        splits: positions per split name, each shuffled with the seed.
    """

    lines: int
    drops: Counter
    names: list[str]
    paths: list[str]
    shard: np.ndarray
    offsets: np.ndarray
    prices: np.ndarray
    codes: np.ndarray
    unique: np.ndarray
    splits: dict[str, list[int]] = field(default_factory=dict)

    @property
    def kept(self) -> np.ndarray:
        return np.sort(np.concatenate([np.asarray(p, dtype=np.int64) for p in self.splits.values()]))

    def items(self, positions: Iterable[int]) -> Iterator[Item]:
        """The items at `positions`, read back from the scratch files in the order given."""
        handles: dict[int, object] = {}
        try:
            for p in positions:
                shard = int(self.shard[p])
                handle = handles.get(shard)
                if handle is None:
                    if len(handles) >= 256:  # thousands of shards would exhaust file handles
                        for h in handles.values():
                            h.close()
                        handles.clear()
                    handle = handles[shard] = open(self.paths[shard], "rb")  # noqa: SIM115
                handle.seek(int(self.offsets[p]))
                yield Item(**json.loads(handle.readline()))
        finally:
            for h in handles.values():
                h.close()


def first_copies(title_keys: np.ndarray, text_keys: np.ndarray) -> np.ndarray:
    """A mask of the items whose title (case-folded) and text no earlier kept item has: exactly
    `pricer.data.curate.dedupe`, with sets only over the items that share a key with another."""
    keep = np.ones(len(title_keys), dtype=bool)
    shared = np.zeros(len(title_keys), dtype=bool)
    for keys in (title_keys, text_keys):
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared |= counts[inverse] > 1
    involved = np.flatnonzero(shared)
    seen_titles: set[int] = set()
    seen_texts: set[int] = set()
    for p, title, text in zip(involved.tolist(), title_keys[involved].tolist(), text_keys[involved].tolist(),
                              strict=True):
        if title in seen_titles or text in seen_texts:
            keep[p] = False
            continue
        seen_titles.add(title)
        seen_texts.add(text)
    return keep


def _run(shards, scratch: Path, seed: int, workers: int, progress: bool) -> list[ShardResult]:
    bar = tqdm(total=len(shards), unit=" shards", desc=f"curating ({workers} worker{'s' * (workers > 1)})",
               disable=not progress, mininterval=0.5)
    results: list[ShardResult | None] = [None] * len(shards)
    with bar:
        if workers == 1 or len(shards) == 1:
            for shard in shards:
                results[shard.index] = curate_shard(shard, str(scratch), seed, progress and shard.end is None)
                bar.update()
            return results  # type: ignore[return-value]
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: the parent may hold threads (tqdm, torch) that a fork would copy mid-lock
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(shards)), mp_context=context) as pool:
            futures = [pool.submit(curate_shard, shard, str(scratch), seed, progress and shard.end is None)
                       for shard in shards]
            try:
                for future in as_completed(futures):
                    result = future.result()
                    results[result.index] = result
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return results  # type: ignore[return-value]


def curate(sources: list[str], curation: Curation, scratch: Path, *, workers: int | None = None,
           progress: bool = False, min_shard_bytes: int = MIN_SHARD_BYTES) -> Corpus:
    """Curate `sources` (expanded, in reading order) into `scratch` and choose the splits.

    Args:
        scratch: an empty folder for the workers' curated shards; the caller removes it.
        workers: processes curating shards side by side (default: the machine's cores); 1 reads in
            this process.
        min_shard_bytes: the smallest byte range a local jsonl is cut into.

    Raises:
        DataError: a source can't be read, or nothing usable is left.
    """
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise SpecError(f"workers: must be >= 1 (got {workers})")
    shards = assign_shards(sources, workers=workers, limit=curation.limit, columns=curation.columns,
                         min_bytes=min_shard_bytes)
    corpus, title_keys, text_keys, split_codes = _merge(_run(shards, scratch, curation.seed, workers, progress))
    keep = first_copies(title_keys, text_keys)
    del title_keys, text_keys
    drops = corpus.drops
    corpus.unique = np.flatnonzero(keep)
    if len(keep) > len(corpus.unique):
        drops[DUPLICATE] += len(keep) - len(corpus.unique)
    kept = _select(corpus, curation)
    if len(kept) < len(corpus.unique):
        drops[OVER_BUCKET_CAP] += len(corpus.unique) - len(kept)
    if not len(kept):
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "the source is empty"
        raise DataError(f"{', '.join(sources)}: no usable items ({reasons})")
    rng = random.Random(curation.seed)
    for code, name in enumerate(SPLITS):
        positions = kept[split_codes[kept] == code].tolist()
        rng.shuffle(positions)  # so that no prefix is one category (the order `split_items` gives)
        corpus.splits[name] = positions
    return corpus


def _merge(results: list[ShardResult]) -> tuple[Corpus, np.ndarray, np.ndarray, np.ndarray]:
    """The shards' numbers as one corpus in reading order (category codes made global), with the
    title keys, text keys and split codes that only the next steps need."""
    index: dict[str, int] = {}
    codes = []
    for r in results:
        remap = np.array([index.setdefault(n, len(index)) for n in r.names] or [0], dtype=np.int32)
        codes.append(remap[r.codes] if len(r.codes) else r.codes)
    drops: Counter = Counter()
    for r in results:
        drops.update(r.drops)
    corpus = Corpus(
        lines=sum(r.lines for r in results), drops=drops, names=list(index), paths=[r.path for r in results],
        shard=np.concatenate([np.full(len(r.prices), r.index, np.int32) for r in results]),
        offsets=np.concatenate([r.offsets for r in results]),
        prices=np.concatenate([r.prices for r in results]),
        codes=np.concatenate(codes).astype(np.int32),
        unique=np.zeros(0, np.int64))
    return (corpus, np.concatenate([r.title_keys for r in results]), np.concatenate([r.text_keys for r in results]),
            np.concatenate([r.splits for r in results]))


def _select(corpus: Corpus, curation: Curation) -> np.ndarray:
    """Positions kept by the balancing or sampling, in the order `split_items` would see them."""
    unique = corpus.unique
    if curation.balance is not None:
        return unique[np.array(balanced_positions(corpus.prices[unique], curation.balance, curation.seed),
                               dtype=np.int64)]
    if curation.sampling is not None:
        chosen = sampled_positions(corpus.prices[unique], corpus.codes[unique], corpus.names,
                                   curation.sampling, curation.seed)
        return unique[np.array(chosen, dtype=np.int64)]
    return unique
