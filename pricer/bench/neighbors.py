"""`pricer bench neighbors --items N`: the neighbour index at the recipe's scale.

Makes N train items from the real curated sample (each a real product with a number in its
title and text and its price moved, so no two are copies), then in a fresh process builds the
index (`pricer.data.neighbors`) and queries it, reporting items/s, queries/s and the process's
peak resident memory after each stage (the items themselves included; the memory the index
adds is the difference from the peak before it). The reference, timed on the same queries in the
same process, is scipy's sparse product with a dense top-k per row: the ratio is what the
top-k library buys.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import resource
import time
from pathlib import Path

import numpy as np

from pricer.errors import DataError
from pricer.items import Item

GIB = 1 << 30
QUERIES = 500  # queries timed (as one batch, the way validation and test are queried)
REFERENCE_QUERIES = 100  # of them, timed again the reference way (its dense rows are 4 ms each at 320k)


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # Linux: KiB


def synthetic_items(sample: Path, n: int, seed: int = 0) -> list[Item]:
    """`n` items made from the curated sample's products: title and text numbered, price moved."""
    from pricer.data.dataset import load_items

    real = load_items(sample)
    if not real:
        raise DataError(f"{sample}: no items to make the bench's products from")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        item = real[i % len(real)]
        tag = f"model {i // len(real)}-{rng.randrange(10_000)}"
        out.append(Item(title=f"{item.title} {tag}", category=item.category,
                        price=round(min(max(item.price * rng.uniform(0.7, 1.3), 0.5), 999.0), 2),
                        text=f"{item.text} {tag}"))
    return out


def reference_query(index, texts: list[str], k: int) -> list[np.ndarray]:
    """The reference: scipy's sparse product, each dense row's top `k` by argpartition."""
    block = (index.vectors(texts) @ index.postings).toarray()
    top = np.argpartition(-block, k - 1, axis=1)[:, :k]
    return [row[np.argsort(-block[r, row])] for r, row in enumerate(top)]


def _run(sample: str, n: int, queries: int, k: int, queue) -> None:
    from pricer.data.neighbors import NeighborIndex

    items = synthetic_items(Path(sample), n)
    before = _peak_gib()
    started = time.perf_counter()
    index = NeighborIndex.build(items)
    build_s = time.perf_counter() - started
    after_build = _peak_gib()
    started = time.perf_counter()
    index.postings  # noqa: B018 - made once, on the first query: timed on its own
    postings_s = time.perf_counter() - started
    asked = items[:: max(1, n // queries)][:queries]
    started = time.perf_counter()
    index.query([i.text for i in asked], k, titles=[i.title for i in asked])
    query_s = time.perf_counter() - started
    few = [i.text for i in asked[:REFERENCE_QUERIES]]
    started = time.perf_counter()
    index.query(few, k)
    few_s = time.perf_counter() - started
    started = time.perf_counter()
    reference_query(index, few, k)
    reference_s = time.perf_counter() - started
    queue.put({"items": n, "nonzeros": int(index.matrix.nnz), "build_s": build_s, "items_per_s": n / build_s,
               "postings_s": postings_s, "queries": len(asked), "k": k, "query_s": query_s,
               "queries_per_s": len(asked) / query_s, "reference_queries": len(few),
               "reference_queries_per_s": len(few) / reference_s, "speedup_vs_reference": reference_s / few_s,
               "peak_rss_gib_items": before, "peak_rss_gib_build": after_build, "peak_rss_gib_query": _peak_gib(),
               "index_gib": (index.matrix.data.nbytes + index.matrix.indices.nbytes) / GIB})


def bench_neighbors(n: int, *, sample: Path | None = None, queries: int = QUERIES, k: int = 5) -> dict:
    """Build and query an index of `n` generated items in a fresh process; its numbers."""
    if n < 1:
        raise DataError(f"--items: at least 1 (got {n})")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    from pricer.data.sources import sample_path

    child = context.Process(target=_run, args=(str(sample or sample_path()), n, queries, k, queue))
    child.start()
    result = queue.get()
    child.join()
    return result


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a manual entry point
    import sys

    print(json.dumps(bench_neighbors(int((argv or sys.argv[1:])[0])), indent=2))
