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

from pricer.atomic import replacing
from pricer.errors import SpecError

if TYPE_CHECKING:
    from pricer.predict.baselines import Baseline

SUFFIX = ".pkl.gz"
# a gzip "bomb" of a few MB unpacks to 100s of GB: a file may unpack to at most this many times its
# own size (fitted baselines' pickles of arrays compress 2-4x), plus a floor for tiny files
MAX_RATIO, FLOOR_BYTES = 50, 64 << 20
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
    def __init__(self, file: io.BufferedIOBase | _Capped, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise SpecError(f"{self.path}: refused to load: it names {module}.{name}, which no fitted pricer "
                            "baseline holds (loading it could run code); use a folder written by `pricer export`")
        return super().find_class(module, name)


class _Capped:
    """A gzip stream that refuses to give more than `cap` bytes: pickle asks for as many bytes as
    the file claims (a frame, a long bytes object), so the claim is checked before it is read."""

    def __init__(self, handle: gzip.GzipFile, path: Path, cap: int) -> None:
        self.handle, self.path, self.cap, self.given = handle, path, cap, 0

    def _take(self, n: int) -> int:
        left = self.cap - self.given
        if n < 0 or n > left:
            n = left + 1  # one byte over says the stream goes on past the cap
        return n

    def _count(self, data_len: int) -> None:
        self.given += data_len
        if self.given > self.cap:
            raise SpecError(f"{self.path}: unpacks to more than {self.cap:,} bytes ({MAX_RATIO}x its size); "
                            "refused (not a fitted baseline; use a folder written by `pricer export`)")

    def read(self, n: int = -1) -> bytes:
        data = self.handle.read(self._take(n))
        self._count(len(data))
        return data

    def readline(self, n: int = -1) -> bytes:
        data = self.handle.readline(self._take(n))
        self._count(len(data))
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)
        if len(view) > self.cap - self.given:
            self._count(len(view))
        n = self.handle.readinto(view)
        self._count(n)
        return n


def save_baseline(baseline: Baseline, path: Path) -> Path:
    """Write `baseline` to `path` (which must end in ``.pkl.gz``)."""
    if not str(path).endswith(SUFFIX):
        raise ValueError(f"{path}: a baseline file ends in {SUFFIX}")
    with replacing(path) as tmp, gzip.open(tmp, "wb", compresslevel=6) as handle:
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
        cap = max(FLOOR_BYTES, MAX_RATIO * path.stat().st_size)
        with gzip.open(path, "rb") as handle:
            return _Allowlist(_Capped(handle, path, cap), path).load()
    except MemoryError:  # a claimed length pickle allocated before reading
        raise SpecError(f"{path}: claims more memory than there is; refused (not a fitted baseline)") from None
    except (OSError, EOFError, pickle.UnpicklingError) as exc:
        raise SpecError(f"{path}: can't read this baseline file ({type(exc).__name__}: {exc})") from None
