"""Shared fixtures: the real sample from ../shared, built splits, the two PyPI tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("PRICER_SAMPLE", REPO.parent / "shared/data/amazon2023-sample/items.jsonl"))
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def sample_path() -> Path:
    """The real 4,940-item curated sample; never copied into the repository."""
    if not SAMPLE.exists():
        pytest.fail(f"real sample not found at {SAMPLE}: put the shared folder beside the checkout "
                    "(../shared/data/amazon2023-sample/items.jsonl) or set PRICER_SAMPLE")
    return SAMPLE


@pytest.fixture(scope="session")
def built_data(sample_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample curated into train/validation/test once per session (a DatasetDict on disk)."""
    from pricer.dataset import build

    out = tmp_path_factory.mktemp("data") / "sample"
    build(sample_path, out, seed=42, progress=False)
    return out


PG_ADMIN = os.environ.get("PRICER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> str:
    """A fresh PostgreSQL database on the local server for one test, dropped afterwards."""
    import uuid

    import psycopg

    name = f"pricer_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is expected at {PG_ADMIN} (set PRICER_TEST_PG): {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
