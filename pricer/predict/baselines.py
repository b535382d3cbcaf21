"""Classical baselines every fine-tune must beat, fitted on train with scikit-learn.

- ``constant``: the train mean, the floor any model must clear.
- ``linear``: linear regression on simple features (text length, weight and size from
  ``details``, how much detail there is, brand present, category one-hot).
- ``tfidf_ridge``: bag of words and bigrams, TF-IDF weighted, ridge regression on log price.
- ``random_forest``: a random forest on the TF-IDF squeezed to 50 SVD components plus the
  simple features, on log price.
- ``knn``: the similarity-weighted geometric-mean price of the `KNN_K` most similar train
  products (`pricer.data.neighbors`, the index fine-tunes with neighbours read): no training at all.

Log price for the text models because prices span three orders of magnitude: a squared error
on dollars lets the few $900 items dominate the fit.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pricer.data.dataset import as_items
from pricer.errors import DataError
from pricer.items import Item
from pricer.metrics import Metrics, score

if TYPE_CHECKING:
    from datasets import DatasetDict

_WEIGHT = re.compile(r"([\d.]+)\s*(pounds?|lbs?|ounces?|oz|grams?|g|kilograms?|kg)\b", re.I)
_POUNDS_PER = {"p": 1.0, "l": 1.0, "o": 1 / 16, "g": 1 / 453.6, "k": 2.2046}
_DIMENSIONS = re.compile(r"([\d.]+)\s*x\s*([\d.]+)\s*x\s*([\d.]+)\s*(inches|cm|centimeters)?", re.I)


def _details(item: Item) -> dict:
    try:
        details = json.loads(item.details) if item.details else {}
    except json.JSONDecodeError:
        return {}
    return details if isinstance(details, dict) else {}


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def weight_pounds(details: dict) -> float | None:
    """Item weight in pounds from ``Item Weight`` or the ``; 3.7 Ounces`` tail of a dimensions field."""
    for key in ("Item Weight", "Package Weight", "Package Dimensions", "Product Dimensions",
                "Item Package Dimensions L x W x H"):
        match = _WEIGHT.search(str(details.get(key, "")))
        if match and (value := _number(match.group(1))) is not None:
            return value * _POUNDS_PER[match.group(2)[0].lower()]
    return None


def volume_cubic_inches(details: dict) -> float | None:
    for key in ("Product Dimensions", "Item Dimensions LxWxH", "Package Dimensions"):
        match = _DIMENSIONS.search(str(details.get(key, "")))
        if match:
            sides = [_number(g) for g in match.groups()[:3]]
            if all(s is not None for s in sides):
                volume = math.prod(sides)  # type: ignore[arg-type]
                return volume / 16.39 if (match.group(4) or "").lower().startswith("c") else volume
    return None


class SimpleFeatures:
    """Numbers a price might follow, plus a one-hot of the categories seen in training."""

    def fit(self, items: Sequence[Item]) -> SimpleFeatures:
        self.categories = sorted({i.category for i in items})
        return self

    def transform(self, items: Sequence[Item]) -> np.ndarray:
        rows = []
        for item in items:
            details = _details(item)
            # a product priced from its text alone (`pricer predict "..."`, details "") has no
            # details object; its curated text still carries "Weight 3.7 ounces" and the dimensions
            found = details if item.details else {"Item Weight": item.text, "Product Dimensions": item.text}
            weight = weight_pounds(found)
            volume = volume_cubic_inches(found)
            rows.append([
                math.log1p(len(item.text)),
                math.log1p(weight) if weight is not None else 0.0,
                float(weight is None),
                math.log1p(volume) if volume is not None else 0.0,
                float(volume is None),
                float(len(details)),
                float(bool(details.get("Brand") or details.get("Brand Name") or details.get("Manufacturer"))),
                *(float(item.category == c) for c in self.categories),
            ])
        return np.asarray(rows, dtype=np.float64)


class Baseline:
    """A fitted classical baseline: `predict(items)` -> dollars (never below $0). Saved by
    `pricer.predict.baselinefile` (a pickle read through an allowlist), so an exported ensemble
    carries the fitted model, not the training data."""

    name = ""

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        return np.clip(self._predict(list(items)), 0.0, None)  # a linear fit can go below $0

    def _predict(self, items: list[Item]) -> np.ndarray:
        raise NotImplementedError


class Constant(Baseline):
    name = "constant"

    def __init__(self, y: np.ndarray) -> None:
        self.mean = float(y.mean())

    def _predict(self, items: list[Item]) -> np.ndarray:
        return np.full(len(items), self.mean)


class Linear(Baseline):
    name = "linear"

    def __init__(self, train: list[Item], y: np.ndarray, simple: SimpleFeatures) -> None:
        from sklearn.linear_model import LinearRegression

        self.simple = simple
        self.model = LinearRegression().fit(simple.transform(train), y)

    def _predict(self, items: list[Item]) -> np.ndarray:
        return self.model.predict(self.simple.transform(items))


class TfidfRidge(Baseline):
    name = "tfidf_ridge"

    def __init__(self, train: list[Item], y: np.ndarray, tfidf) -> None:
        from sklearn.linear_model import Ridge

        self.tfidf = tfidf
        self.model = Ridge(alpha=1.0).fit(tfidf.transform([i.text for i in train]), np.log1p(y))

    def _predict(self, items: list[Item]) -> np.ndarray:
        return np.expm1(self.model.predict(self.tfidf.transform([i.text for i in items])))


class RandomForest(Baseline):
    name = "random_forest"

    def __init__(self, train: list[Item], y: np.ndarray, tfidf, simple: SimpleFeatures, seed: int) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.ensemble import RandomForestRegressor

        x = tfidf.transform([i.text for i in train])
        self.tfidf, self.simple = tfidf, simple
        # 50 components and 100 trees: within 1 % of 100 x 200 on the sample, 2.5x faster on 2 cores.
        self.svd = TruncatedSVD(n_components=min(50, x.shape[1] - 1), random_state=seed).fit(x)
        self.model = RandomForestRegressor(n_estimators=100, min_samples_leaf=2, max_features=0.3,
                                           n_jobs=-1, random_state=seed)
        self.model.fit(self._features(train, x), np.log1p(y))

    def _features(self, items: list[Item], x=None) -> np.ndarray:
        x = self.tfidf.transform([i.text for i in items]) if x is None else x
        return np.hstack([self.svd.transform(x), self.simple.transform(items)])

    def _predict(self, items: list[Item]) -> np.ndarray:
        return np.expm1(self.model.predict(self._features(items)))


class Knn(Baseline):
    name = "knn"

    def __init__(self, train: list[Item], y: np.ndarray, k: int = 5) -> None:
        from pricer.data.neighbors import NeighborIndex

        self.k = k
        self.mean = float(y.mean())  # a text with no neighbour at all (never, with a non-empty train)
        self.index = NeighborIndex.build(train)

    def _predict(self, items: list[Item]) -> np.ndarray:
        from pricer.data.neighbors import knn_price

        prices = (knn_price(n) for n in self.index.query([i.text for i in items], self.k))
        return np.asarray([self.mean if p is None else p for p in prices], dtype=np.float64)


KNN_K = 5
BASELINES = ("constant", "linear", "tfidf_ridge", "random_forest", "knn")


def fit_baselines(train_items: Sequence[Item | dict], seed: int = 42) -> dict[str, Baseline]:
    """Every baseline fitted on `train_items`, by name in the order of `BASELINES` (the TF-IDF
    vocabulary and the simple features are fitted once and shared)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    train = as_items(train_items)
    if not train:
        raise DataError("baselines need train items (got none)")
    y = np.asarray([i.price for i in train], dtype=np.float64)
    simple = SimpleFeatures().fit(train)
    tfidf = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=50_000,
                            strip_accents="unicode").fit([i.text for i in train])
    return {"constant": Constant(y), "linear": Linear(train, y, simple), "tfidf_ridge": TfidfRidge(train, y, tfidf),
            "random_forest": RandomForest(train, y, tfidf, simple, seed), "knn": Knn(train, y, KNN_K)}


def score_baseline(baseline: Baseline, items: Sequence[Item]) -> tuple[Metrics, list[float]]:
    """(Metrics, predictions) of a fitted baseline on `items`, per-category breakdown included."""
    from dataclasses import replace

    from pricer.predict.evaluate import costs

    started = time.perf_counter()
    preds = baseline.predict(items).tolist()
    metrics = score([i.price for i in items], preds, [i.category for i in items])
    return replace(metrics, **costs(started, len(items))), preds


def run_baselines(splits: DatasetDict, test_items: list[Item] | None = None,
                  seed: int = 42) -> list[tuple[str, Metrics]]:
    """Fit each baseline on ``splits["train"]`` and score it on ``splits["test"]`` or `test_items`.

    Returns:
        (name, Metrics) in the order of `BASELINES`, per-category breakdown included.
    """
    test = test_items if test_items is not None else as_items(splits["test"])
    if not test:
        raise DataError("baselines need test items (got none)")
    fitted = fit_baselines(splits["train"], seed)
    return [(name, score_baseline(fitted[name], test)[0]) for name in BASELINES]
