"""One trial: a 4-bit LoRA fine-tune on price prompts, evaluated and saved.

Reads like a recipe: `setup` (data, tokenizer, quantized model + LoRA, optimizer) -> `fit` (steps,
validation callbacks) -> `evaluate_split` -> `save`. `train` runs them in order. The speed trick of
every step is `price_only_loss`: logits only at the few price positions.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass as declared

from pricer.data.dataset import as_items
from pricer.data.fraction import train_subset
from pricer.declared import DECLARED, one_line, validate
from pricer.errors import SpecError, TrialFailed
from pricer.items import Item
from pricer.metrics import Metrics
from pricer.model.batches import pad_batch
from pricer.model.catalog import TARGET_KINDS, ModelSpec, resolve
from pricer.model.loading import QUANTIZATIONS, load_model, prefer_eager_on_cpu
from pricer.model.memory import StepPlan, budget_gib, peak_memory_gib, plan_step
from pricer.model.prompts import DEFAULT_MAX_TOKENS, IGNORE, Example, encode, template_tokens
from pricer.model.shapes import ModelShape
from pricer.predict.evaluate import EVAL_BATCH_SIZE, Evaluation, evaluate_items
from pricer.predict.pricetree import DECODES, DEFAULT_DECODE
from pricer.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    import torch
    from datasets import DatasetDict
    from transformers import PreTrainedTokenizerBase

    from pricer.data.neighbors import Neighbor, NeighborIndex

SCHEDULERS = ("linear", "cosine", "constant")


@declared(frozen=True, config=DECLARED)
class TrainConfig:
    """Everything a trial varies. Defaults make 30 steps on SmolLM2 beat the untrained model.

    Each field's description is its ``pricer train --help`` line (`sweeps.cli.flags` makes the
    flags from these fields); a new field gets a flag by being declared here.
    """

    model: Annotated[str, Field(min_length=1, description="catalog name, local folder or hub id")] = \
        "smollm2-135m-instruct"
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA scale numerator (the update is scaled by alpha / r)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input, in [0, 1)")
    target_modules: Literal[TARGET_KINDS] = Field(
        "all-linear", description="attention: q/k/v/o projections; all-linear: plus the MLP's")
    learning_rate: float = Field(1e-3, gt=0, lt=1, description="peak learning rate, in (0, 1)")
    lr_scheduler: Literal[SCHEDULERS] = Field("cosine", description="learning-rate schedule after the warm-up")
    warmup_steps: int = Field(3, ge=0, description="steps of linear warm-up")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; unset: --epochs passes over the "
                                  "train split")
    epochs: float = Field(1.0, gt=0, description="passes over the train split when --max-steps is unset")
    batch_size: int = Field(8, ge=1, description="prompts per batch; an optimizer step sees batch size x "
                            "grad accum prompts")
    grad_accum: int = Field(1, ge=1, description="batches per optimizer step (gradient accumulation)")
    micro_batch_size: int | None = Field(
        None, ge=1, description="rows per forward/backward (same loss and gradients for any split); unset: "
        "the whole batch, or the largest part the memory budget fits")
    seed: int = Field(42, description="seed of torch (LoRA init, dropout) and of the batch order")
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, description="token budget of the product text in a prompt")
    quantization: Literal[QUANTIZATIONS] = Field(
        "nf4", description="nf4: a 4-bit base (QLoRA); none: plain LoRA on a bf16/fp32 base")
    eval_every: int = Field(0, ge=0, description="validation every N steps (0: only at the end)")
    eval_items: int = Field(100, ge=1, description="validation items per evaluation (the same first N each time)")
    eval_batch_size: int = Field(EVAL_BATCH_SIZE, ge=1, description="prompts per batch when predicting prices")
    train_items: int | None = Field(None, ge=1, description="use at most N train items (unset: all)")
    test_items: int | None = Field(None, ge=1, description="score at most N test items (unset: all)")
    train_fraction: float = Field(1.0, gt=0, le=1, description="train on this fraction of the (limited) train "
                                  "split, in (0, 1]: the same nested subset for every trial of a study; "
                                  "validation and test unchanged")
    fraction_seed: int = Field(0, description="which nested subset a train fraction draws")
    checkpoint_every: int = Field(50, ge=0, description="with a checkpoint folder, save the trainable state "
                                  "every N steps and after the last one (0: never)")
    decode: Literal[DECODES] = Field(
        DEFAULT_DECODE, description="how validation, test and the saved folder read a price: greedy digits, "
        "or the median of the model's price distribution")
    interval: float = Field(0.8, gt=0, lt=1, description="nominal coverage of the price range median decoding "
                            "gives (0.8: the 10th to the 90th percentile), calibrated on the validation items")
    neighbors: int = Field(0, ge=0, le=20, description="list the K most similar train products and their prices "
                           "in each prompt (0: the recipe's prompt)")

    @model_validator(mode="wrap")
    @classmethod
    def _one_line(cls, data: object, handler: Callable) -> TrainConfig:
        """Made in code (`TrainConfig(...)`, `dataclasses.replace`) or from a mapping, a bad config
        is one SpecError naming every bad field, as before it was declared with pydantic."""
        try:
            return handler(data)
        except ValidationError as exc:
            raise SpecError(one_line(exc, "train config", cls)) from None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def levels(self) -> tuple[float, float]:
        """The range's two quantile levels, symmetric around the median: 0.8 -> (0.1, 0.9)."""
        tail = round((1 - self.interval) / 2, 10)
        return tail, round(1 - tail, 10)

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        """From a study file or flags; every unknown or bad field is named in one SpecError."""
        return validate(cls, d, "train config")


@dataclass
class Result:
    """What a trial produced; `to_dict` is what trackers log."""

    config: TrainConfig
    adapter_dir: Path
    val_metrics: Metrics
    test_metrics: Metrics | None
    train_losses: list[tuple[int, float]]
    val_curve: list[tuple[int, float]]
    steps: int
    stopped_early: bool
    wall_s: float
    train_tokens_per_s: float
    peak_mem_gib: float
    plan: StepPlan | None = None
    predictions: list[dict] = field(default_factory=list)
    val_predictions: list[float | None] = field(default_factory=list)
    resumed_from: int | None = None
    train_s: float = 0.0  # the optimizer steps alone, without loading, validation or test
    # the range's calibration (`calibrate`): levels, scale, raw coverages; empty when read greedily
    interval: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "adapter_dir": str(self.adapter_dir),
                "val_metrics": self.val_metrics.to_dict(),
                "test_metrics": self.test_metrics.to_dict() if self.test_metrics else None,
                "train_losses": self.train_losses, "val_curve": self.val_curve, "steps": self.steps,
                "stopped_early": self.stopped_early, "wall_s": self.wall_s,
                "train_tokens_per_s": self.train_tokens_per_s, "peak_mem_gib": self.peak_mem_gib,
                "plan": asdict(self.plan) if self.plan else None, "predictions": self.predictions,
                "val_predictions": self.val_predictions, "resumed_from": self.resumed_from,
                "train_s": self.train_s, "interval": self.interval}


# --- setup ------------------------------------------------------------------------------------

@dataclass
class Run:
    """What `setup` builds and the later stages share."""

    config: TrainConfig
    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_items: list[Item]
    val_items: list[Item]
    test_items: list[Item]
    total_steps: int
    plan: StepPlan
    # the train split's neighbour index when the config lists neighbours (`pricer.data.neighbors`)
    index: NeighborIndex | None = None

    def neighbors_of(self, items: Sequence[Item], *, own: bool = False) -> list[list[Neighbor]] | None:
        """Each item's neighbours (None without them); `own`: train items, which skip themselves."""
        if self.index is None:
            return None
        return self.index.query([i.text for i in items], self.config.neighbors,
                                titles=[i.title for i in items] if own else None)


def setup(config: TrainConfig, data: str | Path | DatasetDict, *, spec: ModelSpec | None = None,
          memory_budget_gib: float | None = None) -> Run:
    """Data, tokenizer, the quantized model with fresh LoRA adapters, optimizer, schedule, and the
    step plan (micro-batch, checkpointing) for the memory budget.

    Args:
        memory_budget_gib: what a step may use (default `pricer.model.memory.budget_gib`, read before
            the weights load).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_scheduler

    from pricer.train.dropout import use_cpu_dropout

    splits = _splits(data)
    train_items = train_subset(as_items(splits["train"])[:config.train_items], config.train_fraction,
                               config.fraction_seed)
    val_items = as_items(splits["validation"])[:config.eval_items]
    test_items = as_items(splits["test"])[:config.test_items]
    if not train_items or not val_items:
        raise SpecError("train data: the train and validation splits must not be empty")
    spec = spec or resolve(config.model)
    total_steps = config.max_steps or max(1, math.ceil(
        config.epochs * len(train_items) / (config.batch_size * config.grad_accum)))

    budget = budget_gib() if memory_budget_gib is None else memory_budget_gib
    model, tokenizer = load_model(spec, config.quantization)
    seq_len = sequence_length(config, tokenizer, chat=spec.chat)
    prefer_eager_on_cpu(model, seq_len)
    plan = plan_for(config, ModelShape.from_config(model.config), budget_gib=budget, seq_len=seq_len,
                     compute_bytes=model.dtype.itemsize)
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(config.seed)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=spec.target_modules(config.target_modules), bias="none",
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft asks the deprecated is_gradient_checkpointing (transformers 5)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = get_peft_model(model, lora)
    if next(model.parameters()).device.type == "cpu":
        use_cpu_dropout(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=total_steps)
    index = None
    if config.neighbors:
        from pricer.data.neighbors import index_of

        index = index_of(splits, data if isinstance(data, (str, Path)) else None)
    return Run(config, spec, model, tokenizer, optimizer, scheduler, train_items, val_items, test_items,
               total_steps, plan, index)


def sequence_length(config: TrainConfig, tokenizer: PreTrainedTokenizerBase, *, chat: bool) -> int:
    """Tokens of a trial's longest prompt: the text budget plus the template around it and the answer."""
    return config.max_tokens + template_tokens(tokenizer, chat=chat, neighbors=config.neighbors)


def plan_for(config: TrainConfig, shape: ModelShape, *, budget_gib: float, seq_len: int,
             compute_bytes: int = 2) -> StepPlan:
    """`pricer.model.memory.plan_step` for a trial's config (its `micro_batch_size` when set)."""
    return plan_step(shape, batch_size=config.batch_size, seq_len=seq_len, lora_r=config.lora_r,
                     budget_gib=budget_gib, target_modules=config.target_modules,
                     quantization=config.quantization, compute_bytes=compute_bytes,
                     micro_batch_size=config.micro_batch_size)


def _splits(data: str | Path | DatasetDict) -> Mapping[str, Sequence]:
    if isinstance(data, (str, Path)):
        from pricer.data.dataset import load_splits

        return load_splits(data)
    return data


# --- one step -----------------------------------------------------------------------------------

def price_only_loss(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the price tokens, the same value as ``model(..., labels=labels).loss``.

    Only ~6 of ~200 positions carry a label, so the vocabulary head runs on just those hidden
    states, gathered into a 2-D tensor (transformers' ``logits_to_keep`` passes 3-D, which is
    slower on CPU). On Gemma 3 270M (262k vocabulary) this makes a training step 2.5x faster.
    """
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
    cap = getattr(base.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def collate(examples: Sequence[Example], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded input_ids / attention_mask / labels of encoded examples (right padding keeps
    the default position ids of every real token)."""
    return pad_batch([e.input_ids for e in examples], pad_id, side="right", labels=[e.labels for e in examples],
                     device=device)


def batch_order(n: int, size: int, seed: int) -> Iterator[list[int]]:
    """Endless seeded shuffles of ``range(n)`` cut into batches of `size`: the same batches for
    the same seed, so a resumed run skips the ones it saw and trains on the ones it would have."""
    rng = random.Random(seed)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        # the last partial batch is dropped (a split smaller than one batch gives one short batch)
        for start in range(0, max(n - size, 0) + 1, size):
            yield order[start:start + size]


def micro_batches(run: Run, skip: int = 0) -> Iterator[dict[str, torch.Tensor]]:
    """The seeded batches of train items after the first `skip`, tokenized as they are needed."""
    device = next(p.device for p in run.model.parameters())
    for chunk in itertools.islice(batch_order(len(run.train_items), run.config.batch_size, run.config.seed),
                                  skip, None):
        items = [run.train_items[i] for i in chunk]
        hints = run.neighbors_of(items, own=True) or [()] * len(items)
        examples = [encode(run.tokenizer, item.text, item.price, chat=run.spec.chat,
                           max_tokens=run.config.max_tokens, neighbors=hint) for item, hint in zip(items, hints,
                                                                                                   strict=True)]
        yield collate(examples, run.tokenizer.pad_token_id, device)


def parts(batch: dict[str, torch.Tensor], size: int) -> Iterator[tuple[dict[str, torch.Tensor], float]]:
    """`batch` in parts of at most `size` rows, each with its share of the batch's price tokens.

    Rows are grouped by length and each part is cut to its longest row, so a split batch also
    carries less padding. Weighting each part's mean loss by its share makes the sum the whole
    batch's loss, and the gradients the whole batch's gradients.
    """
    import torch

    lengths = batch["attention_mask"].sum(dim=1)
    labelled = (batch["labels"][:, 1:] != IGNORE).sum(dim=1)
    total = int(labelled.sum()) or float("nan")  # no price token: no loss to average, as unsplit
    order = torch.argsort(lengths, stable=True)
    for start in range(0, len(order), size):
        rows = order[start:start + size]
        width = int(lengths[rows].max())
        yield {k: v[rows, :width] for k, v in batch.items()}, int(labelled[rows].sum()) / total


def train_step(run: Run, batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """One optimizer step over ``grad_accum`` batches, each run in the plan's micro-batches;
    returns the mean price-token loss."""
    import torch

    run.model.train()
    total = 0.0
    for batch in batches:
        for part, share in parts(batch, run.plan.micro_batch_size):
            loss = price_only_loss(run.model, **part) * (share / len(batches))
            loss.backward()
            total += loss.item()
    if not math.isfinite(total):
        raise TrialFailed(f"loss is {total}; lower the learning rate (now {run.config.learning_rate:g})")
    torch.nn.utils.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], 1.0)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total


# --- fit, evaluate, save ------------------------------------------------------------------------

@dataclass
class Fit:
    losses: list[tuple[int, float]]
    val_curve: list[tuple[int, float]]
    last_val: Evaluation | None
    steps: int
    stopped_early: bool
    tokens: int
    seconds: float


def fit(run: Run, *, report: Callable[[int, Metrics], None] | None = None,
        should_stop: Callable[[], bool] | None = None, on_loss: Callable[[int, float], None] | None = None,
        checkpoint_dir: Path | None = None, resume: Checkpoint | None = None, progress: bool = True) -> Fit:
    """The training loop: steps, a train-loss log, validation every ``eval_every`` steps, a
    checkpoint every ``checkpoint_every`` steps (when `checkpoint_dir` is given).

    Args:
        on_loss: called with (step, train loss) after every step, as it happens.
        resume: a checkpoint of this run's config to go on from (its step, weights, optimizer,
            schedule, RNG and history).
    """
    from tqdm.auto import tqdm

    cfg = run.config
    out = Fit([], [], None, 0, False, 0, 0.0)
    if resume is not None:
        resume.restore(run)
        out = Fit(list(resume.losses), list(resume.val_curve), None, resume.step, False, resume.tokens,
                  resume.seconds)
    batches = micro_batches(run, skip=out.steps * cfg.grad_accum)
    bar = tqdm(total=run.total_steps, initial=out.steps, desc="train", unit="step", disable=not progress,
               file=sys.stderr)
    try:
        for step in range(out.steps + 1, run.total_steps + 1):
            started = time.perf_counter()
            step_batches = [next(batches) for _ in range(cfg.grad_accum)]
            loss = train_step(run, step_batches)
            out.seconds += time.perf_counter() - started
            out.tokens += sum(int(b["attention_mask"].sum()) for b in step_batches)
            out.losses.append((step, loss))
            out.steps = step
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if on_loss:
                on_loss(step, loss)
            if cfg.eval_every and step % cfg.eval_every == 0 and step < run.total_steps:
                out.last_val = evaluate_split(run, run.val_items, progress=progress)
                out.val_curve.append((step, out.last_val.metrics.mae))
                if report:
                    report(step, out.last_val.metrics)
                if should_stop and should_stop():
                    out.stopped_early = True
                    break
            # the last step too: a trial killed during its (long) final evaluation resumes there
            if checkpoint_dir and cfg.checkpoint_every and (step % cfg.checkpoint_every == 0
                                                            or step == run.total_steps):
                save_checkpoint(run, out, checkpoint_dir)
    finally:
        bar.close()
    return out


def evaluate_split(run: Run, items: Sequence[Item], *, progress: bool = False) -> Evaluation:
    return evaluate_items(run.model, run.tokenizer, items, chat=run.spec.chat,
                          max_tokens=run.config.max_tokens, batch_size=run.config.eval_batch_size,
                          progress=progress, decode=run.config.decode, levels=run.config.levels,
                          neighbors=run.neighbors_of(items))


def calibrate(run: Run, val: Evaluation, test: Evaluation | None) -> tuple[Evaluation, Evaluation | None, dict]:
    """Split-conformal calibration of the price ranges on the validation items: one factor
    (`pricer.predict.intervals.conformal_scale`) applied to validation and test alike. Returns
    the rescaled evaluations and what ``pricer.json`` records (the raw coverages too)."""
    from pricer.predict.intervals import conformal_scale

    if not val.ranges:
        return val, test, {}
    factor = conformal_scale(val.ranges, [i.price for i in run.val_items], run.config.interval)
    record = {"levels": list(run.config.levels), "scale": factor or 1.0,
              "val_coverage_raw": val.metrics.coverage,
              "test_coverage_raw": test.metrics.coverage if test else None}
    if factor is None:
        return val, test, record
    return (val.rescaled(factor, run.val_items),
            test.rescaled(factor, run.test_items) if test else None, record)


def save(run: Run, out: Path, metrics: Mapping[str, Metrics | None], interval: Mapping | None = None) -> Path:
    """The adapter folder: peft adapter, tokenizer, pricer.json (entry, prompt, config, metrics,
    the price range's levels and calibration)."""
    from pricer.model.adapter import save_adapter

    folder = save_adapter(run.model, run.tokenizer, out, spec=run.spec, config=run.config.to_dict(),
                          max_tokens=run.config.max_tokens,
                          metrics={k: (m.to_dict() if m else None) for k, m in metrics.items()},
                          interval=interval, neighbors=run.config.neighbors)
    if run.index is not None:  # the folder prices without the study's data
        from pricer.data.neighbors import FOLDER

        run.index.save(folder / FOLDER)
    return folder


def train(config: TrainConfig, data: str | Path | DatasetDict, out: Path, *, spec: ModelSpec | None = None,
          report: Callable[[int, Metrics], None] | None = None,
          should_stop: Callable[[], bool] | None = None, on_loss: Callable[[int, float], None] | None = None,
          checkpoint_dir: Path | None = None, resume_from: Path | None = None, progress: bool = True) -> Result:
    """Fine-tune, evaluate on validation and test, save the adapter folder to `out`.

    Args:
        data: a built dataset folder, a curated/raw jsonl (split on the fly) or a DatasetDict.
        spec: the catalog entry (default: ``resolve(config.model)``).
        report: called with (step, validation metrics) every ``eval_every`` steps and at the end.
        should_stop: asked after each intermediate report; True stops the trial (no test evaluation).
        on_loss: called with (step, train loss) after every step.
        checkpoint_dir: where to save a checkpoint every ``config.checkpoint_every`` steps.
        resume_from: a folder holding a checkpoint of the same config (an earlier, interrupted
            run); training goes on from its step. A folder without one starts at step 0.

    Raises:
        TrialFailed: the loss went NaN/inf.
        SpecError: the checkpoint in `resume_from` was made with another config.
    """
    started = time.perf_counter()
    resume = load_checkpoint(resume_from, config) if resume_from is not None else None
    run = setup(config, data, spec=spec)
    trained = fit(run, report=report, should_stop=should_stop, on_loss=on_loss, checkpoint_dir=checkpoint_dir,
                  resume=resume, progress=progress)
    test, interval = None, {}
    if trained.stopped_early:
        val = trained.last_val
    else:
        val = evaluate_split(run, run.val_items, progress=progress)
        trained.val_curve.append((trained.steps, val.metrics.mae))
        if report:
            report(trained.steps, val.metrics)
        if run.test_items:
            test = evaluate_split(run, run.test_items, progress=progress)
        val, test, interval = calibrate(run, val, test)
    adapter_dir = save(run, Path(out), {"validation": val.metrics, "test": test.metrics if test else None},
                       interval)
    return Result(
        config=config, adapter_dir=adapter_dir, val_metrics=val.metrics,
        test_metrics=test.metrics if test else None, train_losses=trained.losses,
        val_curve=trained.val_curve, steps=trained.steps, stopped_early=trained.stopped_early,
        wall_s=time.perf_counter() - started,
        train_tokens_per_s=trained.tokens / trained.seconds if trained.seconds else 0.0,
        peak_mem_gib=peak_memory_gib(), plan=run.plan,
        predictions=[{k: r[k] for k in ("title", "category", "price", "predicted", "price_low", "price_high")
                      if k in r} for r in test.rows(run.test_items)] if test else [],
        val_predictions=list(val.predictions) if val is not None else [],
        resumed_from=resume.step if resume else None, train_s=trained.seconds, interval=interval)

