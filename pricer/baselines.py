"""Classical baselines every fine-tune must beat, fitted on train with scikit-learn.

- ``constant``: the train mean, the floor any model must clear.
- ``linear``: linear regression on simple features (text length, weight and size from
  ``details``, how much detail there is, brand present, category one-hot).
- ``tfidf_ridge``: bag of words and bigrams, TF-IDF weighted, ridge regression on log price.
- ``random_forest``: a random forest on the TF-IDF squeezed to 50 SVD components plus the
  simple features, on log price.

Log price for the text models because prices span three orders of magnitude: a squared error
on dollars lets the few $900 items dominate the fit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

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
            weight = weight_pounds(details)
            volume = volume_cubic_inches(details)
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


def _items(split) -> list[Item]:
    return [Item(title=r["title"], category=r["category"], price=r["price"], text=r["text"],
                 details=r["details"]) for r in split]


class _Inputs:
    """Train and test items with the features several baselines share, each computed once."""

    def __init__(self, train: list[Item], test: list[Item], seed: int) -> None:
        self.train, self.test, self.seed = train, test, seed
        self.y = np.asarray([i.price for i in train], dtype=np.float64)
        simple = SimpleFeatures().fit(train)
        self.simple_train, self.simple_test = simple.transform(train), simple.transform(test)
        self._tfidf: tuple | None = None

    def tfidf(self) -> tuple:
        if self._tfidf is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2,
                                         max_features=50_000, strip_accents="unicode")
            self._tfidf = (vectorizer.fit_transform([i.text for i in self.train]),
                           vectorizer.transform([i.text for i in self.test]))
        return self._tfidf


def _constant(data: _Inputs) -> np.ndarray:
    return np.full(len(data.test), data.y.mean())


def _linear(data: _Inputs) -> np.ndarray:
    from sklearn.linear_model import LinearRegression

    return LinearRegression().fit(data.simple_train, data.y).predict(data.simple_test)


def _tfidf_ridge(data: _Inputs) -> np.ndarray:
    from sklearn.linear_model import Ridge

    x_train, x_test = data.tfidf()
    return np.expm1(Ridge(alpha=1.0).fit(x_train, np.log1p(data.y)).predict(x_test))


def _random_forest(data: _Inputs) -> np.ndarray:
    from sklearn.decomposition import TruncatedSVD
    from sklearn.ensemble import RandomForestRegressor

    x_train, x_test = data.tfidf()
    # 50 components and 100 trees: within 1 % of 100 x 200 on the sample, 2.5x faster on 2 cores.
    svd = TruncatedSVD(n_components=min(50, x_train.shape[1] - 1), random_state=data.seed).fit(x_train)
    forest = RandomForestRegressor(n_estimators=100, min_samples_leaf=2, max_features=0.3,
                                   n_jobs=-1, random_state=data.seed)
    forest.fit(np.hstack([svd.transform(x_train), data.simple_train]), np.log1p(data.y))
    return np.expm1(forest.predict(np.hstack([svd.transform(x_test), data.simple_test])))


BASELINES = {"constant": _constant, "linear": _linear, "tfidf_ridge": _tfidf_ridge,
             "random_forest": _random_forest}


def run_baselines(splits: DatasetDict, test_items: list[Item] | None = None,
                  seed: int = 42) -> list[tuple[str, Metrics]]:
    """Fit each baseline on ``splits["train"]`` and score it on ``splits["test"]`` or `test_items`.

    Returns:
        (name, Metrics) in the order of `BASELINES`, per-category breakdown included.
    """
    train = _items(splits["train"])
    test = test_items if test_items is not None else _items(splits["test"])
    if not train or not test:
        raise DataError(f"baselines need train and test items (got {len(train)} and {len(test)})")
    data = _Inputs(train, test, seed)
    truths = [i.price for i in test]
    categories = [i.category for i in test]
    results = []
    for name, fit_predict in BASELINES.items():
        preds = np.clip(fit_predict(data), 0.0, None)  # a linear fit can go below $0
        results.append((name, score(truths, preds.tolist(), categories)))
    return results
