"""The neighbour index of a train split: the products most like a given text, with their prices.

A product's nearest train products (TF-IDF cosine over the curated text) and their prices are
what the recipe's course hands the model in its prompt (`pricer.model.prompts`), and their
similarity-weighted geometric-mean price is the ``knn`` baseline (`knn_price`).

The vectoriser is scikit-learn's `HashingVectorizer` (words and word pairs, English stop words
out) weighted by the train split's inverse document frequencies: it has no vocabulary to fit or
store, so building at the recipe's ~320k items stays within the data goal's memory, and the saved
index is a few numpy arrays and a JSON list (`save` / `load`, no pickle). Queries are exact:
sparse_dot_topn multiplies the queries by the index on the process's threads and keeps only each
row's top candidates, never a dense similarity row (at 320k items 8x the queries/s of scipy's
product and a dense top-k, `pricer bench neighbors`).

A query never returns a copy of itself: a train product with the same text (or, when titles are
given, the same title) is skipped, so a training item's neighbours never include itself, and
prompts at training and at prediction time are made the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pricer.errors import DataError
from pricer.items import Item
from pricer.machine import thread_budget

FOLDER = "neighbors"  # the index's folder inside a built dataset and an exported model folder
FORMAT = 1
N_FEATURES = 2 ** 20  # hashed word / word-pair columns; collisions are rare at this width
TITLE_CHARS = 60  # a neighbour's title in a prompt is cut to this many characters, at a word
SPARE = 8  # candidates beyond K, so skipped copies still leave K neighbours
CHUNK = 20_000  # texts vectorised at a time while building
# Terms in more than this share of the train products (and at least `COMMON_FLOOR` of them) are
# dropped, scikit-learn's ``max_df``: their long posting lists made a query at 40k items 2.4x
# slower, and on the sample the knn error moved from $57.90 to $58.03.
MAX_DF = 0.2
COMMON_FLOOR = 50


@dataclass(frozen=True)
class Neighbor:
    """One train product near a query: its short title, price and cosine similarity."""

    title: str
    price: float
    similarity: float


def short_title(title: str, chars: int = TITLE_CHARS) -> str:
    """The title cut at a word to at most `chars` characters (one line)."""
    title = " ".join(title.split())
    if len(title) <= chars:
        return title
    cut = title[:chars].rsplit(" ", 1)[0]
    return cut or title[:chars]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(text.split()).lower().encode(), digest_size=8).digest(), "little")


def _hashes(texts: Sequence[str]) -> np.ndarray:
    return np.fromiter((_hash(t) for t in texts), dtype=np.uint64, count=len(texts))


def _vectorizer():
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(n_features=N_FEATURES, ngram_range=(1, 2), stop_words="english", alternate_sign=False,
                             norm=None, strip_accents="unicode", dtype=np.float32)


def _counts(texts: Sequence[str]):
    counts = _vectorizer().transform(list(texts)).tocsr()
    counts.data = 1.0 + np.log(counts.data)  # sublinear term frequency, as the TF-IDF baselines use
    return counts


def _normalized(matrix):
    from sklearn.preprocessing import normalize

    return normalize(matrix, norm="l2", copy=False)


class NeighborIndex:
    """Train products as TF-IDF rows, their prices, short titles and copy keys.

    Build with `NeighborIndex.build(items)`; `query` returns each text's nearest products.
    """

    def __init__(self, matrix, idf: np.ndarray, prices: np.ndarray, titles: list[str],
                 text_keys: np.ndarray, title_keys: np.ndarray) -> None:
        self.matrix = matrix
        self.idf = idf
        self.prices = prices
        self.titles = titles
        self.text_keys = text_keys
        self.title_keys = title_keys
        self._postings = None

    def __len__(self) -> int:
        return len(self.prices)

    def __getstate__(self) -> dict:
        """Plain arrays only, so a baseline file holding the index (`pricer.predict.baselinefile`)
        names no scipy class: its allowlist stays numpy's arrays."""
        m = self.matrix
        return {"data": m.data, "indices": m.indices, "indptr": m.indptr, "shape": tuple(m.shape),
                "idf": self.idf, "prices": self.prices, "titles": list(self.titles), "text_keys": self.text_keys,
                "title_keys": self.title_keys}

    def __setstate__(self, state: dict) -> None:
        from scipy import sparse

        self.matrix = sparse.csr_matrix((state["data"], state["indices"], state["indptr"]), shape=state["shape"])
        self.idf, self.prices, self.titles = state["idf"], state["prices"], state["titles"]
        self.text_keys, self.title_keys = state["text_keys"], state["title_keys"]
        self._postings = None

    @classmethod
    def build(cls, items: Sequence[Item]) -> NeighborIndex:
        """The index of these (train) items.

        Raises:
            DataError: no items.
        """
        return cls.build_chunked(len(items), lambda a, b: ([i.text for i in items[a:b]], [i.title for i in items[a:b]],
                                                           [i.price for i in items[a:b]]))

    @classmethod
    def build_chunked(cls, n: int, chunk: Callable[[int, int], tuple[list[str], list[str], list[float]]]
                      ) -> NeighborIndex:
        """The index of `n` items read `CHUNK` at a time as (texts, titles, prices) of rows
        ``[start, stop)``: a built split's texts are never all in memory at once.

        Raises:
            DataError: no items.
        """
        if n == 0:
            raise DataError("neighbour index: the train split is empty")
        from scipy import sparse

        parts, prices, titles, text_keys, title_keys = [], [], [], [], []
        for start in range(0, n, CHUNK):
            texts, names, values = chunk(start, min(n, start + CHUNK))
            parts.append(_counts(texts))
            prices.extend(values)
            titles.extend(short_title(t) for t in names)
            text_keys.append(_hashes(texts))
            title_keys.append(_hashes(names))
        counts = sparse.vstack(parts, format="csr")
        del parts
        df = np.bincount(counts.indices, minlength=N_FEATURES)
        idf = (np.log((1 + n) / (1 + df)) + 1).astype(np.float32)  # scikit-learn's smoothed idf
        idf[df > max(MAX_DF * n, COMMON_FLOOR)] = 0.0
        counts.data *= idf[counts.indices]
        counts.eliminate_zeros()
        return cls(_normalized(counts), idf, np.asarray(prices, dtype=np.float64), titles,
                   np.concatenate(text_keys), np.concatenate(title_keys))

    def vectors(self, texts: Sequence[str]):
        counts = _counts(texts)
        counts.data *= self.idf[counts.indices]
        counts.eliminate_zeros()
        return _normalized(counts)

    @property
    def postings(self):
        """The matrix transposed, as rows per term: a query walks only its own terms' lists (2x
        faster than multiplying by the transposed view at 40k items). Made once, not saved."""
        if getattr(self, "_postings", None) is None:
            self._postings = self.matrix.T.tocsr()
        return self._postings

    def query(self, texts: Sequence[str], k: int, *, titles: Sequence[str] | None = None) -> list[list[Neighbor]]:
        """The `k` nearest train products of each text, nearest first, skipping copies of it (the
        same text, or the same title when `titles` are given).

        Args:
            titles: the queries' own titles (train items querying their own split).
        """
        if k <= 0 or not texts:
            return [[] for _ in texts]
        from sparse_dot_topn import sp_matmul_topn

        queries = self.vectors(texts)
        text_keys = _hashes(texts)
        title_keys = _hashes(titles) if titles is not None else None
        wanted = min(len(self), k + SPARE)
        threads = thread_budget()
        top = sp_matmul_topn(queries, self.postings, top_n=wanted, n_threads=threads if threads > 1 else None)
        out: list[list[Neighbor]] = []
        for q in range(len(texts)):
            ids = top.indices[top.indptr[q]:top.indptr[q + 1]].astype(np.int64)
            sims = top.data[top.indptr[q]:top.indptr[q + 1]]
            if len(ids) < wanted:  # fewer train products share a term with it: the first others, at 0
                others = np.setdiff1d(np.arange(min(len(self), wanted + len(ids))), ids)[:wanted - len(ids)]
                ids, sims = np.concatenate([ids, others]), np.concatenate([sims, np.zeros(len(others), sims.dtype)])
            order = np.lexsort((ids, -sims))  # nearest first; a tie goes to the earlier train product
            ids, sims = ids[order], sims[order]
            keep = self.text_keys[ids] != text_keys[q]
            if title_keys is not None:
                keep &= self.title_keys[ids] != title_keys[q]
            out.append([Neighbor(self.titles[j], float(self.prices[j]), float(s))
                        for j, s in zip(ids[keep][:k], sims[keep][:k], strict=False)])
        return out

    def save(self, folder: Path) -> Path:
        """Write the index to `folder` (numpy arrays and JSON only) and return it."""
        from scipy import sparse

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        sparse.save_npz(folder / "matrix.npz", self.matrix, compressed=False)
        np.savez(folder / "arrays.npz", idf=self.idf, prices=self.prices, text_keys=self.text_keys,
                 title_keys=self.title_keys)
        (folder / "titles.json").write_text(json.dumps(self.titles))
        (folder / "index.json").write_text(json.dumps({
            "format": FORMAT, "items": len(self), "vectorizer": "hashing-tfidf", "n_features": N_FEATURES,
            "ngram_range": [1, 2], "stop_words": "english", "sublinear_tf": True,
            "max_df": MAX_DF}, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path) -> NeighborIndex:
        """The index `save` wrote to `folder`.

        Raises:
            DataError: a missing, truncated or foreign file (one line naming it).
        """
        from scipy import sparse

        folder = Path(folder)
        path = folder / "index.json"
        try:
            meta = json.loads(path.read_text())
            if meta.get("format") != FORMAT or meta.get("n_features") != N_FEATURES:
                raise ValueError(f"format {meta.get('format')!r} with {meta.get('n_features')!r} features "
                                 f"(expected {FORMAT} with {N_FEATURES})")
            path = folder / "matrix.npz"
            matrix = sparse.load_npz(path).tocsr()
            path = folder / "arrays.npz"
            with np.load(path, allow_pickle=False) as arrays:
                idf, prices = arrays["idf"], arrays["prices"]
                text_keys, title_keys = arrays["text_keys"], arrays["title_keys"]
            path = folder / "titles.json"
            titles = json.loads(path.read_text())
            n = meta["items"]
            if not (matrix.shape == (n, N_FEATURES) and len(prices) == len(titles) == len(text_keys) == n
                    and len(idf) == N_FEATURES):
                raise ValueError(f"its parts disagree on the number of items ({n} expected)")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable neighbour index ({type(exc).__name__}: {exc}); rebuild "
                            "it with `pricer data build` (or retrain / re-export the model folder)") from None
        return cls(matrix, idf, prices, titles, text_keys, title_keys)


def knn_price(neighbors: Sequence[Neighbor]) -> float | None:
    """The neighbours' similarity-weighted geometric-mean price (plain when no weight is positive);
    None without neighbours."""
    if not neighbors:
        return None
    weights = [max(n.similarity, 0.0) for n in neighbors]
    if sum(weights) == 0:
        weights = [1.0] * len(neighbors)
    logs = [math.log(max(n.price, 0.01)) for n in neighbors]
    return math.exp(sum(w * v for w, v in zip(weights, logs, strict=True)) / sum(weights))


def index_of_split(split) -> NeighborIndex:
    """The index of a train split: `Item`s, or a `datasets.Dataset` read in chunks."""
    if not hasattr(split, "column_names"):  # Items, or rows of a built split as mappings
        return NeighborIndex.build([row if isinstance(row, Item) else Item(**row) for row in split])

    def rows(start: int, stop: int) -> tuple[list[str], list[str], list[float]]:
        batch = split[start:stop]
        return batch["text"], batch["title"], batch["price"]

    return NeighborIndex.build_chunked(len(split), rows)


def index_of(data, folder: Path | None = None) -> NeighborIndex:
    """The neighbour index of a dataset: the one built with it when `folder` (a built dataset) holds
    one, else built now from ``data["train"]``."""
    if folder is not None and (Path(folder) / FOLDER / "index.json").is_file():
        return NeighborIndex.load(Path(folder) / FOLDER)
    return index_of_split(data["train"])
