"""A fitted baseline's file: a gzipped pickle read through an allowlist, so a folder from elsewhere
can't run code when it is loaded.

`pickle` (and ``joblib.load``, which is pickle) calls whatever a file names: a ``model.joblib`` in a
folder someone sent you can run any command as you. A fitted baseline is made of a few known
classes (this module's `ALLOWED`: the baselines, scikit-learn's estimators, numpy's arrays); the
unpickler here resolves those and refuses every other name before anything is called. skops.io
does the same with a trusted-types list, but it writes a dict entry by entry: 4 s for the TF-IDF
vocabulary of 300 items, minutes for the sample's, against a fraction of a second here.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.errors import SpecError

if TYPE_CHECKING:
    from pricer.predict.baselines import Baseline

SUFFIX = ".pkl.gz"
_NUMPY = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy", "float64"), ("numpy", "int64"), ("numpy", "int32")}
for _core in ("numpy.core", "numpy._core"):  # numpy 1 and 2 spell its internals differently
    _NUMPY |= {(f"{_core}.multiarray", "_reconstruct"), (f"{_core}.multiarray", "scalar"),
               (f"{_core}.numeric", "_frombuffer")}
ALLOWED = frozenset(_NUMPY | {
    ("pricer.predict.baselines", name) for name in
    ("Constant", "Linear", "TfidfRidge", "RandomForest", "SimpleFeatures", "Knn")} | {
    # the knn baseline's index pickles as numpy arrays and a list of titles (its __getstate__)
    ("pricer.data.neighbors", "NeighborIndex")} | {
    ("sklearn.decomposition._truncated_svd", "TruncatedSVD"),
    ("sklearn.ensemble._forest", "RandomForestRegressor"),
    ("sklearn.feature_extraction.text", "TfidfTransformer"),
    ("sklearn.feature_extraction.text", "TfidfVectorizer"),
    ("sklearn.linear_model._base", "LinearRegression"),
    ("sklearn.linear_model._ridge", "Ridge"),
    ("sklearn.tree._classes", "DecisionTreeRegressor"),
    ("sklearn.tree._tree", "Tree"),
})


class _Allowlist(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise SpecError(f"{self.path}: refused to load: it names {module}.{name}, which no fitted pricer "
                            "baseline holds (loading it could run code); use a folder written by `pricer export`")
        return super().find_class(module, name)


def save_baseline(baseline: Baseline, path: Path) -> Path:
    """Write `baseline` to `path` (which must end in ``.pkl.gz``)."""
    if not str(path).endswith(SUFFIX):
        raise ValueError(f"{path}: a baseline file ends in {SUFFIX}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=6) as handle:
        pickle.dump(baseline, handle, protocol=5)
    return path


def load_baseline(path: Path) -> Baseline:
    """The baseline in `path`, resolving only `ALLOWED` names.

    Raises:
        SpecError: a joblib file from an older version, or a file that names anything else.
    """
    path = Path(path)
    if path.suffix == ".joblib":
        raise SpecError(f"{path}: a joblib pickle, which pricer no longer loads (it could run code); re-export "
                        "the folder with this version (`pricer export STUDY --ensemble K`, after relaunching a "
                        "study that logged its baselines this way)")
    if not path.name.endswith(SUFFIX):
        raise SpecError(f"{path}: not a pricer baseline file (*{SUFFIX})")
    try:
        with gzip.open(path, "rb") as handle:
            return _Allowlist(handle, path).load()
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        raise SpecError(f"{path}: can't read this baseline file ({type(exc).__name__}: {exc})") from None
