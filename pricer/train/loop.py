"""One trial: a 4-bit LoRA fine-tune on price prompts, evaluated and saved.

Reads like a recipe: `setup` (data, tokenizer, quantized model + LoRA, optimizer) -> `fit` (steps,
validation callbacks) -> `evaluate_split` -> `save`. `train` runs them in order. What a trial varies
is `pricer.train.config.TrainConfig`; one optimizer step (and its speed trick, `price_only_loss`)
is `pricer.train.step`.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.data.dataset import as_items
from pricer.data.fraction import train_subset
from pricer.errors import SpecError
from pricer.items import Item
from pricer.metrics import Metrics
from pricer.model.catalog import ModelSpec, resolve
from pricer.model.loading import load_model, prefer_eager_on_cpu
from pricer.model.memory import StepPlan, budget_gib, peak_memory_gib, plan_step
from pricer.model.prompts import template_tokens
from pricer.model.shapes import ModelShape
from pricer.phases import Phase, Phases, phase, recording
from pricer.predict.evaluate import Evaluation, evaluate_items
from pricer.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from pricer.train.config import TrainConfig
from pricer.train.step import Run, micro_batches, train_step

if TYPE_CHECKING:
    from datasets import DatasetDict
    from transformers import PreTrainedTokenizerBase


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
    # where this trial's seconds went (`pricer.phases`), measured in the process that trained
    phases: list[Phase] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "adapter_dir": str(self.adapter_dir),
                "val_metrics": self.val_metrics.to_dict(),
                "test_metrics": self.test_metrics.to_dict() if self.test_metrics else None,
                "train_losses": self.train_losses, "val_curve": self.val_curve, "steps": self.steps,
                "stopped_early": self.stopped_early, "wall_s": self.wall_s,
                "train_tokens_per_s": self.train_tokens_per_s, "peak_mem_gib": self.peak_mem_gib,
                "plan": asdict(self.plan) if self.plan else None, "predictions": self.predictions,
                "val_predictions": self.val_predictions, "resumed_from": self.resumed_from,
                "train_s": self.train_s, "interval": self.interval,
                "phases": [asdict(p) for p in self.phases]}


# --- setup ------------------------------------------------------------------------------------

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
    on_cpu = model.device.type == "cpu"
    plan = plan_for(config, ModelShape.from_config(model.config), budget_gib=budget, seq_len=seq_len,
                     compute_bytes=model.dtype.itemsize, cpu=on_cpu)
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(config.seed)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=spec.target_modules(config.target_modules), bias="none",
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft asks the deprecated is_gradient_checkpointing (transformers 5)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        model = get_peft_model(model, lora)
    if on_cpu:
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
             compute_bytes: int = 2, cpu: bool = False) -> StepPlan:
    """`pricer.model.memory.plan_step` for a trial's config (its `micro_batch_size` when set)."""
    return plan_step(shape, batch_size=config.batch_size, seq_len=seq_len, lora_r=config.lora_r,
                     budget_gib=budget_gib, target_modules=config.target_modules,
                     quantization=config.quantization, compute_bytes=compute_bytes,
                     micro_batch_size=config.micro_batch_size, cpu=cpu)


def _splits(data: str | Path | DatasetDict) -> Mapping[str, Sequence]:
    if isinstance(data, (str, Path)):
        from pricer.data.dataset import load_splits

        return load_splits(data)
    return data


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
            with phase("train steps"):
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
                with phase("validation"):
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
                with phase("checkpoint"):
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
    with recording(Phases()) as phases:
        resume = load_checkpoint(resume_from, config) if resume_from is not None else None
        with phase("load model"):
            run = setup(config, data, spec=spec)
        trained = fit(run, report=report, should_stop=should_stop, on_loss=on_loss, checkpoint_dir=checkpoint_dir,
                      resume=resume, progress=progress)
        test, interval = None, {}
        if trained.stopped_early:
            val = trained.last_val
        else:
            with phase("validation"):
                val = evaluate_split(run, run.val_items, progress=progress)
            trained.val_curve.append((trained.steps, val.metrics.mae))
            if report:
                report(trained.steps, val.metrics)
            if run.test_items:
                with phase("test"):
                    test = evaluate_split(run, run.test_items, progress=progress)
            val, test, interval = calibrate(run, val, test)
        with phase("save adapter"):
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
        resumed_from=resume.step if resume else None, train_s=trained.seconds, interval=interval,
        phases=phases.rows)

