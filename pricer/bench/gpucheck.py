"""`make gpu-check`: the GPU numbers in one run, for the day a GPU is at hand.

`pricer bench --shape` for the three real shapes (Llama 3.1 8B, Qwen 2.5 7B, Gemma 2 2B: random
weights, `pricer.bench.shaped`), then one real trial step through `pricer.train.loop.train` on the first
shape (load, step, validation, test, adapter folder), written as one JSON table. The settings are cut
from the bench defaults (3 steps, 16 items predicted) for the whole run to fit in 8 minutes on an
H100/H200 (not timed on one yet: the table's ``seconds`` and ``checkpoint_s`` will say where it goes).

Without a GPU it refuses; ``toy=True`` runs the same code on the toy models of the same families
(`pricer.model.toys`) instead of the real shapes, which checks the path on a CPU in seconds. Shapes cut
to a few layers (`BenchSettings.layers`) also run on a CPU, slowly: their vocabularies stay full size.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, field, replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from pricer.bench.speed import SHAPE_TOKENIZER, BenchSettings, run_bench
from pricer.data.sources import sample_path
from pricer.declared import declared
from pricer.errors import SpecError

SHAPE_NAMES = ("llama-3.1-8b", "qwen2.5-7b", "gemma-2-2b")
# the toy entry standing in for each shape on a CPU
TOY_OF = {"llama-3.1-8b": "toy-llama-3.1", "qwen2.5-7b": "toy-qwen2.5", "gemma-2-2b": "toy-gemma-2"}


@declared("gpu-check")
class CheckSettings:
    """What the check runs.

    Args:
        bench: the benchmark's settings for every shape (the recipe's 16 x 182-token batches).
        trial_items: validation and test items the trial step evaluates.
        toy: the toy models instead of the real shapes (a code-path check that runs on a CPU).
    """

    bench: BenchSettings = field(default_factory=lambda: BenchSettings(steps=3, eval_items=16))
    shapes: tuple[Literal[SHAPE_NAMES], ...] = SHAPE_NAMES
    trial_items: Annotated[int, Field(ge=1)] = 16
    toy: bool = False

    @field_validator("shapes")
    @classmethod
    def _some(cls, shapes: tuple[str, ...]) -> tuple[str, ...]:
        if not shapes:  # not min_length: pydantic adds it to every bad name's error too
            raise ValueError(f"name at least one of {', '.join(SHAPE_NAMES)}")
        return shapes


def run_gpu_check(settings: CheckSettings | None = None, *, out: Path | None = None,
                  data: str | Path | None = None, workdir: Path | None = None) -> dict:
    """Bench every shape, and one trial step on the first; return the table, written to `out` as it
    fills (``total_s`` is null until the end).

    Args:
        data: anything `pricer.data.dataset.load_splits` takes (default: the shared sample).
        workdir: where the random checkpoints go (a temporary folder by default; each is removed
            once measured, the three together are ~36 GB).

    Raises:
        SpecError: no CUDA device, and neither `toy` nor shapes cut to a few layers.
    """
    import torch

    settings = settings or CheckSettings()
    if not (settings.toy or settings.bench.layers) and not torch.cuda.is_available():
        raise SpecError("gpu-check: no CUDA device here (torch.cuda.is_available() is False); it measures "
                        "GPU numbers. `pricer gpu-check --toy` checks the same code path on a CPU")
    data = data or sample_path()
    started = time.perf_counter()
    table = {"device": _device_name(), "versions": _versions(), "toy": settings.toy,
             "settings": _settings_row(settings), "shapes": {}, "trial": None, "total_s": None}

    def write() -> None:
        # after every measurement: a run cut short by a time limit or a crash keeps what it measured
        if out is not None:
            Path(out).write_text(json.dumps(table, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="pricer-gpu-check-") as tmp:
        root = Path(workdir or tmp)
        for name in settings.shapes:
            table["shapes"][name] = _bench_one(name, settings, data, root)
            write()
            if table["trial"] is None:
                table["trial"] = _trial_step(name, settings, data, root)
                write()
            shutil.rmtree(root / name, ignore_errors=True)
    table["total_s"] = round(time.perf_counter() - started, 1)
    write()
    return table


def _bench_one(name: str, settings: CheckSettings, data: str | Path, root: Path) -> dict:
    """`run_bench` of one shape (or its toy), with the time it took to write the checkpoint apart."""
    started = time.perf_counter()
    bench = replace(settings.bench, loads=False)  # a GPU quantizes as it loads: three more loads of a shape, for nothing
    if settings.toy:
        result = run_bench(TOY_OF[name], bench.steps, None, data=data, settings=bench, workdir=root / name)
        write_s = 0.0
    else:
        _shape_spec(name, settings, root)  # written here, found in place by the bench and the trial
        write_s = time.perf_counter() - started
        result = run_bench(SHAPE_TOKENIZER, bench.steps, name, data=data, settings=bench, workdir=root)
    return {"model": result.notes["model"], **result.to_json(), "ratios": result.ratios(),
            "plan": result.notes["plan"], "seconds": round(time.perf_counter() - started, 1),
            "checkpoint_s": round(write_s, 1)}


def _shape_spec(name: str, settings: CheckSettings, root: Path):
    from pricer.bench.shaped import shape_model
    from pricer.model.catalog import CATALOG, materialize

    return shape_model(name, materialize(CATALOG[SHAPE_TOKENIZER]), root / name, layers=settings.bench.layers)


def _trial_step(name: str, settings: CheckSettings, data: str | Path, root: Path) -> dict:
    """`pricer.train.loop.train` with the default trial config for one step, on the checkpoint the
    bench of `name` just wrote (or its toy)."""
    from datasets import DatasetDict

    from pricer.bench.shaped import PeakMemory
    from pricer.data.dataset import load_splits
    from pricer.model.catalog import CATALOG
    from pricer.train.config import TrainConfig
    from pricer.train.loop import train

    spec = CATALOG[TOY_OF[name]] if settings.toy else _shape_spec(name, settings, root)
    splits = load_splits(data)
    n = settings.trial_items
    subset = DatasetDict({"train": splits["train"].select(range(settings.bench.batch_size)),
                          "validation": splits["validation"].select(range(n)), "test": splits["test"].select(range(n))})
    config = TrainConfig(model=spec.name, max_steps=1, batch_size=settings.bench.batch_size, eval_items=n,
                         test_items=n, warmup_steps=0)
    started = time.perf_counter()
    with PeakMemory() as mem:
        result = train(config, subset, root / "trial", spec=spec, progress=False)
    return {"model": spec.name, "config": config.to_dict(), "wall_s": round(time.perf_counter() - started, 1),
            "train_tokens_per_s": result.train_tokens_per_s, "peak_mem_gib": mem.gib,
            "plan": result.plan.describe() if result.plan else None, "val_mae": result.val_metrics.mae}


def _settings_row(settings: CheckSettings) -> dict:
    bench = {k: v for k, v in asdict(settings.bench).items() if k not in ("model", "shape")}  # set per shape
    return bench | {"trial_items": settings.trial_items}


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "bitsandbytes")}

