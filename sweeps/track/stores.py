"""The stores a study writes to (the Optuna storage, the MLflow store) as URLs, and opening them
while other workers do the same.

URLs are read and written by SQLAlchemy (`make_url`, `URL.create`), so a query string
(``sqlite:///runs/x/optuna.db?timeout=30``) stays out of the file path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def sqlite_url(path: str | Path) -> str:
    """``sqlite:///PATH`` for a database file (relative paths stay relative)."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(path)).render_as_string()


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for any other URL (a server, an in-memory
    database, an MLflow ``http://`` or a path that is no URL at all)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def retried(call: Callable[[], T], *, attempts: int, errors: tuple[type[BaseException], ...]) -> T:
    """``call()``, tried again after 1, 2, 3... s when it raises one of `errors`; the last try's
    error propagates. For a race that settles by itself: workers started together on a fresh
    database all create its tables, and the losers find them made a moment later."""
    for attempt in range(attempts):
        try:
            return call()
        except errors:
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise ValueError(f"attempts must be >= 1 (got {attempts})")
