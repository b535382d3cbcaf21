"""Store URLs read and written one way, and the retry of a store that is being created."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sweeps.spec.urls import sqlite_path, sqlite_url
from sweeps.track.stores import retried


def test_a_query_string_stays_out_of_the_sqlite_file_path(tmp_path: Path) -> None:
    db = tmp_path / "runs" / "optuna.db"
    assert sqlite_path(f"{sqlite_url(db)}?timeout=30") == db
    assert sqlite_path("sqlite:///runs/x/mlflow.db") == Path("runs/x/mlflow.db")


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:5432/test", "http://127.0.0.1:5000",
                                 "sqlite://", "./mlruns", "file:///tmp/mlruns"])
def test_urls_of_no_sqlite_file_have_no_path(url: str) -> None:
    assert sqlite_path(url) is None


def test_a_written_url_opens_the_file_it_names(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    db = tmp_path / "a dir" / "store.db"
    db.parent.mkdir()
    sqlite3.connect(db).execute("CREATE TABLE t (x INTEGER)").connection.commit()
    engine = create_engine(sqlite_url(db))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 0
    engine.dispose()
    assert sqlite_url("runs/q/optuna.db") == "sqlite:///runs/q/optuna.db"  # relative stays relative


def test_retried_tries_again_until_the_call_succeeds_and_gives_up_with_the_last_error() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionError("tables being created")
        return "open"

    assert retried(flaky, attempts=3, errors=(ConnectionError,)) == "open" and len(calls) == 2

    def broken() -> None:
        calls.append(1)
        raise ConnectionError(f"try {len(calls)}")

    calls.clear()
    with pytest.raises(ConnectionError, match="try 2"):
        retried(broken, attempts=2, errors=(ConnectionError,))
    calls.clear()
    with pytest.raises(KeyError):  # not an error to wait out: raised at once
        retried(lambda: {}["x"], attempts=3, errors=(ConnectionError,))
