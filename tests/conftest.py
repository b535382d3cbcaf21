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
    from pricer.data.dataset import build

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


# --- the two PyPI tiny models and one short real fine-tune (trial) -------------------------------

TINY_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")


@pytest.fixture(scope="session")
def tiny_models() -> dict:
    """Catalog entries of the two PyPI tiny models, their GGUF files converted once into the pricer
    cache ($PRICER_CACHE or ~/.cache/pricer), so later sessions and every test reuse the folders."""
    from pricer.model.catalog import CATALOG, materialize

    for name in TINY_MODELS:
        materialize(CATALOG[name])
    return {name: CATALOG[name] for name in TINY_MODELS}


@pytest.fixture(scope="session", params=TINY_MODELS)
def tiny_trial(request, tiny_models, built_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real 4-bit LoRA fine-tune of each tiny model, kept small: 8 train items seen 3 times
    (batch 4, 6 steps, 96 tokens), validation every 3 steps, 8 test items. Returns (Result, reports)."""
    from pricer.train.config import TrainConfig
    from pricer.train.loop import train

    config = TrainConfig(model=request.param, max_steps=6, batch_size=4, max_tokens=96, train_items=8,
                         eval_every=3, eval_items=4, test_items=8, learning_rate=1e-3, warmup_steps=1)
    reports: list = []
    out = tmp_path_factory.mktemp("adapter") / request.param
    result = train(config, built_data, out, report=lambda step, m: reports.append((step, m)), progress=False)
    return result, reports
