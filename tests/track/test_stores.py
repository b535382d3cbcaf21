"""Store URLs read and written one way, and the retry of a store that is being created."""

from __future__ import annotations

import sqlite3
import time
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


def test_a_storage_call_whose_connection_the_database_severs_is_tried_again(pg_url: str) -> None:
    """A PostgreSQL restart (here: the study's backends terminated, the shared server left alone)
    while a worker's query ran raised StorageInternalError, and the worker died with it."""
    import threading

    import optuna
    import psycopg
    from conftest import PG_ADMIN

    from sweeps.run.studies import close_storage, open_storage

    study = optuna.create_study(study_name="severed", storage=open_storage(pg_url))
    study.enqueue_trial({"x": 1.0})
    database = pg_url.rsplit("/", 1)[1]
    answer: dict = {}
    with psycopg.connect(pg_url) as locker:
        locker.execute("LOCK TABLE trials IN ACCESS EXCLUSIVE MODE")  # the worker's next read waits on it
        reader = threading.Thread(target=lambda: answer.update(
            trials=_or_error(lambda: study.get_trials(deepcopy=False))))
        reader.start()
        time.sleep(2)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            severed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                                    "AND pid <> %s", (database, locker.info.backend_pid)).fetchall()
        locker.rollback()
    reader.join(60)
    close_storage(study)
    assert severed, "no connection of the study's was open"
    assert isinstance(answer["trials"], list) and len(answer["trials"]) == 1, answer


def _or_error(call):
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 -- the test reports whatever the call raised
        return exc
