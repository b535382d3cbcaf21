"""Where items come from: several files or URLs, the ``amazon2023:<Category>`` shorthand, and a
key of the sources' content that a built dataset is cached under.

A build reads its sources in the order given; de-duplication keeps the first copy, so the order
is part of the key.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from pricer.errors import DataError

HF_CATEGORY_URL = ("hf://datasets/McAuley-Lab/Amazon-Reviews-2023/raw/meta_categories/"
                   "meta_{category}.jsonl")
SHORTHAND = "amazon2023:"
# The recipe's eight categories (its 400k curated products come from their ~2.8M raw lines).
RECIPE_CATEGORIES = (
    "Automotive", "Electronics", "Office_Products", "Tools_and_Home_Improvement",
    "Cell_Phones_and_Accessories", "Toys_and_Games", "Appliances", "Musical_Instruments",
)
# Every `meta_<Category>.jsonl` of the Amazon Reviews 2023 release.
AMAZON2023_CATEGORIES = tuple(sorted({
    *RECIPE_CATEGORIES,
    "All_Beauty", "Amazon_Fashion", "Arts_Crafts_and_Sewing", "Baby_Products",
    "Beauty_and_Personal_Care", "Books", "CDs_and_Vinyl", "Clothing_Shoes_and_Jewelry", "Digital_Music",
    "Gift_Cards", "Grocery_and_Gourmet_Food", "Handmade_Products", "Health_and_Household",
    "Health_and_Personal_Care", "Home_and_Kitchen", "Industrial_and_Scientific", "Kindle_Store",
    "Magazine_Subscriptions", "Movies_and_TV", "Patio_Lawn_and_Garden", "Pet_Supplies", "Software",
    "Sports_and_Outdoors", "Subscription_Boxes", "Video_Games", "Unknown",
}))
# Where the benches and `make gpu-check` find the real sample unless told: ``$PRICER_SAMPLE``, else
# the shared folder beside a checkout, seen from the checkout (where a study file's ``../shared``
# source points too). Read from the current folder, never from where the package is installed.
SAMPLE_ENV = "PRICER_SAMPLE"
SAMPLE_BESIDE = Path("../shared/data/amazon2023-sample/items.jsonl")
# Bump when curation changes what it writes for the same input: every cached build is then rebuilt.
CURATION_VERSION = 2


def sample_path() -> Path:
    """The real sample the benches read by default: ``$PRICER_SAMPLE``, else
    ``../shared/data/amazon2023-sample/items.jsonl`` from the current folder, as an absolute path."""
    return Path(os.environ.get(SAMPLE_ENV) or SAMPLE_BESIDE).expanduser().resolve()


# the URLs a build reads: the hub and plain HTTPS. fsspec knows many more (file://, ftp://, s3://,
# memory://, an sftp to anywhere...) and a study file from elsewhere must not reach them
SCHEMES = ("hf", "https")
# how long the size/ETag look-up of a URL may take before the build goes on keyed by the URL alone
INFO_TIMEOUT_S = 20.0


def is_url(source: str | Path) -> bool:
    return "://" in str(source)


def check_url(source: str | Path) -> None:
    """Nothing for a local path, ``hf://`` or ``https://``.

    Raises:
        DataError: any other URL scheme, naming it.
    """
    text = str(source)
    if is_url(text) and text.split("://", 1)[0].lower() not in SCHEMES:
        raise DataError(f"{text}: a {text.split('://', 1)[0]}:// source is not read; use a local path, "
                        f"{', '.join(s + '://' for s in SCHEMES)} or amazon2023:<Category>")


def read_errors() -> tuple[type[BaseException], ...]:
    """What opening or streaming a source may raise: I/O, decoding, a missing fsspec backend, and
    the HTTP client of huggingface_hub (httpx or its fork httpx2; neither is an OSError).

    Evaluated when an exception is being matched, so the HTTP client is imported by then if used.
    """
    errors: list[type[BaseException]] = [OSError, ValueError, ImportError]
    for name in ("httpx", "httpx2"):
        module = sys.modules.get(name)
        if module is not None and isinstance(getattr(module, "HTTPError", None), type):
            errors.append(module.HTTPError)
    return tuple(errors)


def expand(source: str | Path) -> str:
    """``amazon2023:Appliances`` -> the hub's raw ``meta_Appliances.jsonl`` URL; anything else as is.

    Raises:
        DataError: an unknown category, naming it and listing the valid ones.
    """
    text = str(source)
    if not text.startswith(SHORTHAND):
        return text
    category = text[len(SHORTHAND):].strip()
    if category not in AMAZON2023_CATEGORIES:
        raise DataError(f"{text}: unknown Amazon 2023 category {category!r}; valid: "
                        f"{', '.join(AMAZON2023_CATEGORIES)}")
    return HF_CATEGORY_URL.format(category=category)


def expand_all(sources: Iterable[str | Path]) -> list[str]:
    """Every source expanded, in order; each local file must exist.

    Raises:
        DataError: no source, a repeated source, an unknown category, or a local file that is
            missing or a folder (named, with its place in the list).
    """
    expanded = [expand(s) for s in sources]
    if not expanded:
        raise DataError("no source given; pass --source PATH_OR_URL (repeatable) or amazon2023:<Category>")
    seen: set[str] = set()
    for n, source in enumerate(expanded, start=1):
        check_url(source)
        if source in seen:
            raise DataError(f"{source}: given twice in the source list; list each source once")
        seen.add(source)
        if not is_url(source) and not Path(source).is_file():
            where = f" (source {n} of {len(expanded)})" if len(expanded) > 1 else ""
            problem = "is a folder, not a file" if Path(source).is_dir() else "no such file"
            raise DataError(f"{source}: {problem}{where} (expected a jsonl of raw Amazon 2023 metadata "
                            "or curated items, a product table, or amazon2023:<Category>)")
    return expanded


def _fingerprint(source: str) -> dict:
    """What identifies a source's content cheaply: size and mtime of a local file; a URL's size,
    ETag or modification time when the remote answers, else the URL alone (a cached build then
    stays usable offline)."""
    if not is_url(source):
        stat = os.stat(source)
        return {"source": str(Path(source).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    info = _info_within(source, INFO_TIMEOUT_S)
    keep = {k: str(info[k]) for k in ("size", "etag", "ETag", "last_modified", "LastModified", "last_commit")
            if k in info}
    return {"source": source, **keep}


def _info_within(source: str, timeout: float) -> dict:
    """fsspec's ``info`` of a URL, or {} when it fails or takes longer than `timeout` s (a server
    that accepts and never answers would otherwise hold the build forever)."""
    import threading

    found: dict = {}

    def look() -> None:
        try:
            import fsspec

            fs, path = fsspec.core.url_to_fs(source)
            found.update(fs.info(path))
        except read_errors():  # offline or no backend: the URL alone is the key
            pass

    # a daemon thread: one that never returns must not keep the process alive at exit
    thread = threading.Thread(target=look, name="source-info", daemon=True)
    thread.start()
    thread.join(timeout)
    return dict(found) if not thread.is_alive() else {}


def content_key(sources: Iterable[str], settings: Mapping[str, object]) -> str:
    """A short hex key of the sources' content, the build settings and `CURATION_VERSION`: the same
    key means the same built dataset; a touched source or a changed setting gives a new one."""
    payload = {"version": CURATION_VERSION, "sources": [_fingerprint(s) for s in sources],
               "settings": dict(sorted(settings.items()))}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
