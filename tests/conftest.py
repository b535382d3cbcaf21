"""Shared fixtures, built once per session and read by every room's tests: the real sample from
../shared, its built splits and a small slice of them, the two PyPI tiny models and the six toys
(their 4-bit loads shared), one short trial of each tiny model, one small launched study, short
toy studies, and fresh PostgreSQL databases. Tests that train, serve or soak are marked `slow`."""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from pricer.machine import THREAD_ENVS, usable_cores

# `pytest -n N` (pytest-xdist; pyproject's addopts ask for it) runs N test processes side by side:
# each one's torch, BLAS and tokenizers, and every worker and trial process it starts, get its
# share of the cores, since N processes that each took every core ran slower than one
if _workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = str(max(usable_cores() // int(_workers), 1))
    for _name in THREAD_ENVS:
        os.environ.setdefault(_name, _share)

# the session fixtures that train or launch: every test that reads one goes to the same test
# process, so `pytest -n 2` builds each once; the rest go by module (module fixtures built once)
SHARED = ("sweep", "tiny_trial")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``: one xdist group per shared fixture or module, the groups with the
    most slow tests first, so the longest ones start at once and none is left to run alone at the end."""
    # the controller sees --dist; xdist hands its workers `loadgroup` and sets their --dist to "no"
    if not (config.getoption("dist", "no") == "loadgroup" or getattr(config.option, "loadgroup", False)):
        return
    groups = {item: next((f for f in SHARED if f in item.fixturenames), item.nodeid.split("::")[0])
              for item in items}
    for item, group in groups.items():
        item.add_marker(pytest.mark.xdist_group(group))
    slow = Counter(group for item, group in groups.items() if item.get_closest_marker("slow"))
    first = {}
    for n, group in enumerate(groups.values()):
        first.setdefault(group, n)
    items.sort(key=lambda item: (-slow[groups[item]], first[groups[item]]))


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


@pytest.fixture(scope="session")
def small_data(built_data: Path):
    """A few rows of each built split, the data every test that needs only a handful reads: train 8,
    validation 8, test 12 (a DatasetDict in memory; take a slice, never mutate)."""
    from datasets import DatasetDict

    from pricer.data.dataset import load_splits

    splits = load_splits(built_data)
    return DatasetDict({"train": splits["train"].select(range(8)), "validation": splits["validation"].select(range(8)),
                        "test": splits["test"].select(range(12))})


@pytest.fixture(scope="session")
def small_items(small_data) -> list:
    """`small_data`'s 12 test rows as Items (prices and texts to evaluate, predict or write out)."""
    from pricer.data.dataset import as_items

    return as_items(small_data["test"])


PG_ADMIN = os.environ.get("PRICER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new PostgreSQL database on the local server, dropped on leaving (its URL, no password)."""
    import uuid

    import psycopg

    name = f"pricer_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is expected at {PG_ADMIN} (set PRICER_TEST_PG): {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server for one test, dropped afterwards."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def mlflow_pg(pg_url: str) -> str:
    """A second fresh database beside `pg_url`'s, for an MLflow store (Optuna's tables and MLflow's
    both keep an ``alembic_version``: they can't share one database). Dropped afterwards."""
    import psycopg

    name = pg_url.rsplit("/", 1)[1] + "_mlflow"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
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


@pytest.fixture(scope="session")
def toys() -> dict:
    """The six toy entries (`pricer.model.toys`: each hub family's real architecture at toy size,
    random weights, since the hub weights can't be downloaded here), built once into the pricer cache."""
    from pricer.model.catalog import CATALOG, TOY_ENTRIES, materialize

    for name in TOY_ENTRIES:
        materialize(CATALOG[name])
    return {name: CATALOG[name] for name in TOY_ENTRIES}


@pytest.fixture(scope="session")
def load_4bit(tiny_models, toys):
    """name -> (model, tokenizer) as a trial loads them (nf4, repack trap defused), each loaded once
    per session. Shared: a test that changes a model (a LoRA, an attention switch, a config field)
    puts it back before it returns."""
    from pricer.model.loading import load_model

    specs = {**tiny_models, **toys}
    cache: dict = {}

    def load(name: str):
        if name not in cache:
            cache[name] = load_model(specs[name], "nf4")
        return cache[name]
    return load


@pytest.fixture(scope="session", params=TINY_MODELS)
def tiny_trial(request, tiny_models, built_data: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real 4-bit LoRA fine-tune of each tiny model, kept small (a step is seconds on a CPU): 4
    train items seen twice (batch 2, 4 steps, 64 tokens), validation every 2 steps on 4 items, 4
    test items. Returns (Result, reports)."""
    from pricer.train.config import TrainConfig
    from pricer.train.loop import train

    config = TrainConfig(model=request.param, max_steps=4, batch_size=2, max_tokens=64, train_items=4,
                         eval_every=2, eval_items=4, test_items=4, learning_rate=3e-3, warmup_steps=1)
    reports: list = []
    out = tmp_path_factory.mktemp("adapter") / request.param
    result = train(config, built_data, out, report=lambda step, m: reports.append((step, m)), progress=False)
    return result, reports


# --- short toy-Llama studies, the ones `pricer bench fleet` and `faults` launch -------------------

@pytest.fixture
def toy_study(tmp_path: Path, sample_path: Path):
    """Writes a study file NAME.yaml of short real trials (sweeps/bench/soak.py's template: the toy
    Llama, batch 2, 32-token prompts, 4 validation and 4 test items, a checkpoint each step), so the
    tests launch what the benches launch; `model` swaps in a real tiny model where a test needs one."""
    from sweeps.bench.soak import STUDY

    def write(name: str, *, steps: int = 2, trials: int = 1, model: str = "toy-llama-3.1") -> Path:
        path = tmp_path / f"{name}.yaml"
        text = STUDY.format(name=name, workdir=tmp_path / "runs", sample=sample_path, steps=steps, trials=trials)
        path.write_text(text.replace("toy-llama-3.1", model))
        return path

    return write


# --- one small real study, launched twice ----------------------------------------------------

SWEEP_STUDY = """\
name: sweep-test
workdir: {workdir}
data: {{source: {sample}, limit: 800}}
search_space:
  model: {{choices: [smollm2-135m-instruct, gemma-3-270m]}}
  lora_r: {{choices: [4, 8]}}
  lora_alpha_ratio: {{choices: [2]}}
  learning_rate: {{low: 1.0e-4, high: 0.5, log: true}}
fixed: {{max_steps: 2, batch_size: 2, max_tokens: 64, eval_items: 4, test_items: 4, warmup_steps: 0,
        target_modules: attention}}
enqueue:
  - {{model: smollm2-135m-instruct, lora_r: 8, learning_rate: 3.0e-3}}
  - {{model: gemma-3-270m, lora_r: 8, learning_rate: 3.0e-3}}
  - {{model: smollm2-135m-instruct, lora_r: 4, learning_rate: 0.5}}
sampler: {{type: random, seed: 0}}
pruner: {{type: median, eval_every: 1, n_startup_trials: 2}}
objective: rmsle
n_trials: 2
"""


@pytest.fixture(scope="session")
def sweep(tmp_path_factory: pytest.TempPathFactory, sample_path: Path) -> SimpleNamespace:
    """One real study on CPU that every test of a launched study reads (test_launch, test_export,
    test_verdict): both tiny models, SQLite Optuna storage, a sqlite MLflow store. A first launch
    runs the two enqueued good trials; a second continues the same study and adds a hopeless one
    (learning rate 0.5: it writes no number at all) that the median pruner stops at its first
    report. Trials are 2 steps of batch 2 on 64-token prompts, scored on 4 validation and 4 test
    items. The objective is RMSLE: a miss scores as $0, which the dollar error barely separates
    from a tiny model's early guesses but RMSLE does (~4 vs ~2.5)."""
    from sweeps.run.launch import launch
    from sweeps.spec.study import load_study
    from sweeps.track.tracking import MlflowTracker

    root = tmp_path_factory.mktemp("sweep")
    path = root / "sweep-test.yaml"
    path.write_text(SWEEP_STUDY.format(workdir=root / "runs", sample=sample_path))
    spec = load_study(path)
    launch(spec, progress=False)
    tracker = MlflowTracker(spec.tracking_uri, spec.name, create=False)
    first_parents = tracker.study_runs(spec.name)
    study = launch(spec.with_overrides(n_trials=3), progress=False)
    return SimpleNamespace(root=root, path=path, spec=spec, study=study, tracker=tracker,
                           first_parents=first_parents)


# --- a predictor without a fine-tune: fitted baselines and a one-member ensemble ---------------------

@pytest.fixture(scope="session")
def fitted(sample_path: Path):
    """The classical baselines fitted on 200 real items, and 40 more to predict."""
    from pricer.data.dataset import load_items
    from pricer.predict.baselines import fit_baselines

    items = load_items(sample_path)[:240]
    return fit_baselines(items[:200]), items[200:]


@pytest.fixture
def ensemble_folder(tmp_path: Path, fitted) -> Path:
    """An ensemble folder of one real fitted baseline (linear): a predictor with no fine-tune."""
    from pricer.predict.baselinefile import SUFFIX, save_baseline
    from pricer.predict.ensemble import Member, save_ensemble

    baselines, _ = fitted
    folder = tmp_path / "ens"
    save_baseline(baselines["linear"], folder / "members" / "linear" / f"model{SUFFIX}")
    save_ensemble(folder, [Member("linear", "baseline", f"members/linear/model{SUFFIX}", 1.0)], {})
    return folder
