"""The URLs of a study's stores (the Optuna storage, the MLflow store), read and written by
SQLAlchemy (`URL.create`, `make_url`): a query string (``sqlite:///runs/x/optuna.db?timeout=30``)
stays out of the file path, and a path with odd characters stays one path.
"""

from __future__ import annotations

from pathlib import Path


def sqlite_url(path: str | Path) -> str:
    """``sqlite:///PATH`` for a database file (relative paths stay relative)."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(path)).render_as_string()


def is_sqlite(url: str) -> bool:
    """Whether `url` is a SQLite database (a file or in memory): one writer at a time, made on
    first use."""
    return _backend(url) == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for any other URL (a server, an in-memory
    database, an MLflow ``http://`` or a path that is no URL at all)."""
    from sqlalchemy.engine import make_url

    if not is_sqlite(url):
        return None
    database = make_url(url).database
    return None if database in (None, "", ":memory:") else Path(database)


def _backend(url: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        return None
