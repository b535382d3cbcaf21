"""Before a launch builds data or creates anything: are the Optuna storage and the MLflow store
reachable? Each is tried once with a short timeout, so a wrong URL is one error line in seconds
(MLflow's own client retries a dead server for minutes) and nothing half-made is left behind.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pricer.errors import SpecError
from sweeps.spec.urls import is_sqlite
from sweeps.track.redact import redact

TIMEOUT_S = 5


def check_storage(url: str, *, what: str = "storage", flag: str = "--storage") -> None:
    """Connect once to an RDB URL (SQLite files are made on first use, so they are not tried)."""
    if is_sqlite(url):
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        args = {"connect_timeout": TIMEOUT_S} if url.startswith(("postgresql", "mysql")) else {}
        engine = create_engine(url, connect_args=args)
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise SpecError(f"{what} {redact(url)}: not a database URL ({_line(exc)}); use e.g. "
                        f"{flag} postgresql://USER@HOST:5432/DB or sqlite:///PATH") from None
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise SpecError(f"{what} {redact(url)}: can't connect ({_line(getattr(exc, 'orig', exc))}); start the "
                        f"database or fix host, port and database name in {flag}") from None
    finally:
        engine.dispose()


def check_tracking(uri: str) -> None:
    """An ``http(s)://`` MLflow server must answer ``/health``; a database store must connect."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=TIMEOUT_S) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SpecError(f"tracking_uri {redact(uri)}: no MLflow server answers ({reason}); start `mlflow server` "
                            "there or fix --tracking-uri") from None
    elif scheme.startswith(("postgresql", "mysql")):
        check_storage(uri, what="tracking_uri", flag="--tracking-uri")


def check_stores(storage: str, tracking_uri: str) -> None:
    """Both stores of a study, before anything is built or written."""
    check_storage(storage)
    check_tracking(tracking_uri)


def _line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return redact(lines[0]) if lines else type(exc).__name__
