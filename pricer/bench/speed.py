"""`pricer bench`: the project's trial path against the seed recipe's, in one process, on the same
model and the same data, as ratios.

Each path loads its own copy of the 4-bit model (the recipe's preparation upcasts and wraps the
model it is given), trains `steps` steps on the same labelled prompts from the real sample, then
predicts the same validation items: the recipe one item at a time, the project in batches. The
project's path plans its step with the recipe's measured peak as its memory budget (`pricer.model.memory.
plan_step`: the whole batch, or micro-batches, before checkpointing), so the ratios compare the two
at no more memory than the recipe used. Speed is
timed over the steps after the first (which pays one-time allocation costs); memory is the peak of
each whole path, load included (`benchmodels.PeakMemory`).
"""

from __future__ import annotations

import gc
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated

from pydantic import Field

from pricer.data.sources import sample_path
from pricer.declared import declared
from pricer.errors import SpecError

# The model whose tokenizer random-weight shapes use: its 49k ids fit every real vocabulary.
SHAPE_TOKENIZER = "smollm2-135m-instruct"
JSON_KEYS = ("train_tokens_per_s", "train_tokens_per_s_ref", "eval_items_per_s", "eval_items_per_s_ref",
             "peak_mem_gib", "peak_mem_gib_ref", "load_s", "load_s_ref", "mae", "mae_ref")


@declared("bench")
class BenchSettings:
    """What both paths run.

    Args:
        batch_size / max_tokens: the recipe's 16 x 182 tokens by default (prompt + answer).
        eval_items: validation items each path predicts.
        layers: fewer decoder layers for a `shape` (checking the code path on a CPU only).
        loads: also time the 4-bit load of the base, the project's against the recipe's (three
            more loads: the GPU check, whose loads quantize on the GPU either way, leaves it out).
    """

    model: Annotated[str, Field(min_length=1)] = SHAPE_TOKENIZER
    shape: str | None = None
    steps: Annotated[int, Field(ge=1)] = 5
    batch_size: Annotated[int, Field(ge=1)] = 16
    max_tokens: Annotated[int, Field(ge=64)] = 182  # a prompt and its price
    eval_items: Annotated[int, Field(ge=1)] = 48
    lora_r: Annotated[int, Field(ge=1)] = 32
    layers: Annotated[int, Field(ge=1)] | None = None
    seed: int = 42
    loads: bool = True


@dataclass(frozen=True)
class BenchResult:
    """Both paths' numbers (`*_ref`: the recipe's) and how they were measured."""

    settings: BenchSettings
    device: str
    dtype: str
    train_tokens_per_s: float
    train_tokens_per_s_ref: float
    eval_items_per_s: float
    eval_items_per_s_ref: float
    peak_mem_gib: float
    peak_mem_gib_ref: float
    load_s: float | None
    load_s_ref: float | None
    mae: float
    mae_ref: float
    memory_method: str
    notes: dict = field(default_factory=dict)

    def to_json(self) -> dict[str, float]:
        """The numbers `pricer bench --json` prints."""
        return {k: getattr(self, k) for k in JSON_KEYS if getattr(self, k) is not None}

    def ratios(self) -> dict[str, float]:
        """project / recipe for speeds, memory and load time (> 1 faster; < 1 less memory, a faster load)."""
        def ratio(a: float, b: float) -> float:
            return a / b if b else float("nan")

        return {"train_tokens_per_s": ratio(self.train_tokens_per_s, self.train_tokens_per_s_ref),
                "eval_items_per_s": ratio(self.eval_items_per_s, self.eval_items_per_s_ref),
                "peak_mem_gib": ratio(self.peak_mem_gib, self.peak_mem_gib_ref)} | (
                {"load_s": ratio(self.load_s, self.load_s_ref)} if self.load_s is not None else {})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PathNumbers:
    """One path's measurements."""

    tokens_per_s: float
    items_per_s: float
    peak_gib: float
    mae: float
    losses: tuple[float, ...]
    plan: str = "the recipe's"


def run_bench(model: str = SHAPE_TOKENIZER, steps: int = 5, shape: str | None = None, *,
              data: str | Path | None = None, settings: BenchSettings | None = None,
              workdir: Path | None = None) -> BenchResult:
    """Run the recipe's path, then the project's, on the same model and data; return both.

    Args:
        model: catalog name (ignored when `shape` is given).
        shape: a real architecture from `pricer.model.shapes.SHAPES` with random weights (meant for a GPU).
        data: anything `pricer.data.dataset.load_splits` takes (default: the shared sample); the first `steps * batch_size` train
            items are trained on and the first `eval_items` validation items predicted.
        settings: batch size, token budget, evaluation items...; `model`, `steps` and `shape`
            override its fields.
        workdir: where the random-weight checkpoint and the Trainer's scratch go (a temporary
            folder by default).
    """
    settings = replace(settings or BenchSettings(), model=model, steps=steps, shape=shape)
    with tempfile.TemporaryDirectory(prefix="pricer-bench-") as tmp:
        return _run(settings, data or sample_path(), Path(workdir or tmp))


def _run(settings: BenchSettings, data: str | Path, workdir: Path) -> BenchResult:
    import torch

    from pricer.bench.shaped import shape_model
    from pricer.data.dataset import load_splits
    from pricer.model.catalog import materialize, resolve
    from pricer.model.loading import compute_dtype, load_tokenizer, pick_device
    from pricer.model.prompts import template_tokens

    device = pick_device()
    dtype = compute_dtype(device)
    if settings.shape:
        spec = shape_model(settings.shape, materialize(resolve(SHAPE_TOKENIZER)), workdir / settings.shape,
                           layers=settings.layers)
    else:
        spec = resolve(settings.model)
    tokenizer = load_tokenizer(spec, materialize(spec))

    # Both paths read the same prompts: the text budget leaves room for the question, the template
    # and the longest answer inside the recipe's `max_tokens`.
    overhead = template_tokens(tokenizer, chat=spec.chat)
    text_budget = settings.max_tokens - overhead - 2  # re-encoding a cut text can add a token
    if text_budget < 16:
        raise SpecError(f"bench: max_tokens {settings.max_tokens} leaves {text_budget} tokens of product "
                        f"text after {spec.name}'s {overhead}-token prompt; raise --max-tokens")
    splits = load_splits(data)
    n_train = settings.steps * settings.batch_size
    if len(splits["train"]) < n_train or len(splits["validation"]) < settings.eval_items:
        raise SpecError(f"bench: {data} has {len(splits['train'])} train / {len(splits['validation'])} "
                        f"validation items; the settings need {n_train} / {settings.eval_items}")
    train_rows = splits["train"].select(range(n_train))
    val_rows = splits["validation"].select(range(settings.eval_items))

    recipe_config = _recipe_config(settings, dtype == torch.bfloat16)
    load_s, load_s_ref = _load_seconds(spec, recipe_config.bf16) if settings.loads else (None, None)
    ref = _reference_path(spec, tokenizer, train_rows, val_rows, recipe_config, text_budget, workdir)
    gc.collect()
    fast = _project_path(spec, train_rows, val_rows, recipe_config, text_budget, memory_budget_gib=ref.peak_gib)
    return BenchResult(
        settings=settings, device=str(device), dtype=str(dtype).removeprefix("torch."),
        train_tokens_per_s=fast.tokens_per_s, train_tokens_per_s_ref=ref.tokens_per_s,
        eval_items_per_s=fast.items_per_s, eval_items_per_s_ref=ref.items_per_s,
        peak_mem_gib=fast.peak_gib, peak_mem_gib_ref=ref.peak_gib, load_s=load_s, load_s_ref=load_s_ref,
        mae=fast.mae, mae_ref=ref.mae,
        memory_method=MEMORY_METHOD["cuda" if device.type == "cuda" else "cpu"],
        notes={"model": spec.name, "text_budget": text_budget, "plan": fast.plan, "losses": list(fast.losses),
               "losses_ref": list(ref.losses)})


MEMORY_METHOD = {"cuda": "torch.cuda.max_memory_allocated, reset before each path",
                 "cpu": "peak RSS sampled every 5 ms minus RSS at the start of each path"}


def _recipe_config(settings: BenchSettings, bf16: bool):
    from pricer.bench.recipe import RecipeConfig

    # The reference computes in the dtype the project picks for this device: bf16 on a GPU (the
    # recipe's own setting); fp32 on a CPU whose bf16 matmuls are emulated, so that the ratios
    # measure the levers, not the dtype.
    return RecipeConfig(batch_size=settings.batch_size, max_tokens=settings.max_tokens, steps=settings.steps,
                        lora_r=settings.lora_r, seed=settings.seed, bf16=bf16)


def _load_seconds(spec, bf16: bool) -> tuple[float, float]:
    """Seconds to load the 4-bit base and its tokenizer: the project's `load_model` and the recipe's
    `load_quantized`, after one untimed project load (which writes a CPU's quantized copy, and
    brings the weights' files into the page cache for both)."""
    import time

    from pricer.bench import recipe
    from pricer.model.catalog import materialize
    from pricer.model.loading import load_model, load_tokenizer

    def timed(load) -> float:
        started = time.perf_counter()
        loaded = load()
        del loaded
        gc.collect()
        return time.perf_counter() - started

    folder = materialize(spec)
    timed(lambda: load_model(spec))
    project = timed(lambda: load_model(spec))
    reference = timed(lambda: (recipe.load_quantized(folder, attn_implementation=spec.attn_implementation, bf16=bf16),
                               load_tokenizer(spec, folder)))
    return project, reference


def _reference_path(spec, tokenizer, train_rows, val_rows, config, text_budget: int,
                    workdir: Path) -> PathNumbers:
    from pricer.bench import recipe
    from pricer.bench.shaped import PeakMemory
    from pricer.metrics import parse_price, score
    from pricer.model.catalog import materialize
    from pricer.model.prompts import encode_many

    examples = encode_many(tokenizer, train_rows["text"], train_rows["price"], chat=spec.chat,
                           max_tokens=text_budget)
    prompts = [e.prompt_ids for e in encode_many(tokenizer, val_rows["text"], chat=spec.chat,
                                                 max_tokens=text_budget)]
    with PeakMemory() as mem:
        model = recipe.load_quantized(materialize(spec), attn_implementation=spec.attn_implementation,
                                      bf16=config.bf16)
        model, stats = recipe.train_reference(model, tokenizer, examples, config, workdir / "trainer")
        texts, seconds = recipe.generate_one_at_a_time(model, tokenizer, prompts, config.new_tokens)
        del model
    mae = score(list(val_rows["price"]), [parse_price(t) for t in texts]).mae
    return PathNumbers(stats.tokens_per_s, len(prompts) / seconds, mem.gib, mae, stats.losses)


def _project_path(spec, train_rows, val_rows, recipe_config, text_budget: int, *,
                  memory_budget_gib: float) -> PathNumbers:
    """`pricer.train.loop`'s setup, step and evaluation with the recipe's hyperparameters, its step
    planned for `memory_budget_gib`."""
    import time

    import torch
    from datasets import DatasetDict

    from pricer.bench.shaped import PeakMemory
    from pricer.train.config import TrainConfig
    from pricer.train.loop import evaluate_split, setup
    from pricer.train.step import micro_batches, train_step

    config = TrainConfig(
        model=spec.name, lora_r=recipe_config.lora_r, lora_alpha=recipe_config.lora_alpha,
        lora_dropout=recipe_config.lora_dropout, target_modules="attention",
        learning_rate=recipe_config.learning_rate, lr_scheduler="cosine", warmup_steps=0,
        max_steps=recipe_config.steps, batch_size=recipe_config.batch_size, seed=recipe_config.seed,
        max_tokens=text_budget, eval_items=len(val_rows))
    data = DatasetDict({"train": train_rows, "validation": val_rows, "test": val_rows.select([])})
    with PeakMemory() as mem:
        run = setup(config, data, spec=spec, memory_budget_gib=memory_budget_gib)
        plan = run.plan.describe()
        batches = micro_batches(run)
        times, tokens, losses = [], [], []
        for _ in range(config.max_steps):
            batch = next(batches)
            _sync(torch)
            started = time.perf_counter()
            losses.append(train_step(run, [batch]))
            _sync(torch)
            times.append(time.perf_counter() - started)
            tokens.append(int(batch["attention_mask"].sum()))
        started = time.perf_counter()
        evaluation = evaluate_split(run, run.val_items)
        _sync(torch)
        eval_s = time.perf_counter() - started
        del run
    # the first step pays for allocations and kernel selection, as in the reference: time the rest
    skip = 1 if len(times) > 1 else 0
    return PathNumbers(sum(tokens[skip:]) / sum(times[skip:]), len(val_rows) / eval_s, mem.gib,
                       evaluation.metrics.mae, tuple(losses), plan)


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
