"""The seed recipe's fine-tune and evaluation, kept only as the benchmark's reference.

What a trial replaced, run as the recipe ran it: HF `Trainer` + peft LoRA (r 32 on q/k/v/o) on a
bitsandbytes nf4 double-quant base prepared by `prepare_model_for_kbit_training` (which upcasts
every non-4-bit weight to fp32 and turns gradient checkpointing on), paged AdamW (32-bit) on CUDA,
bf16, batch 16 x 182 tokens, the full-vocabulary loss with labels masked to the answer, and an
evaluation that generates 3 tokens for one item at a time. `pricer.bench.speed` times it against the
project's path; no trial ever runs this module.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from pricer.declared import declared
from pricer.model.batches import pad_batch
from pricer.model.prompts import IGNORE, Example
from pricer.model.shapes import ATTENTION_MODULES


@declared("recipe")
class RecipeConfig:
    """The recipe's hyperparameters (its published values are the defaults).

    Args:
        max_tokens: sequence budget; longer examples are cut from the right, as SFT did.
        new_tokens: tokens generated per item at evaluation ("123" for one-token-a-digit vocabularies,
            "123", ".", "00" for Llama 3's).
        bf16: bf16 compute and mixed precision, as the recipe ran on a GPU; False: fp32 (for a CPU
            without native bf16 matmuls, where bf16 is many times slower).
        gradient_checkpointing: what `prepare_model_for_kbit_training` switches on by default.
    """

    batch_size: Annotated[int, Field(ge=1)] = 16
    max_tokens: Annotated[int, Field(ge=1)] = 182
    steps: Annotated[int, Field(ge=1)] = 5
    lora_r: Annotated[int, Field(ge=1)] = 32
    lora_alpha: int = 64
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    learning_rate: float = 1e-4
    new_tokens: Annotated[int, Field(ge=1)] = 3
    bf16: bool = True
    gradient_checkpointing: bool = True
    seed: int = 42

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainStats:
    """What the reference training did: real (non-padding) tokens seen in the timed steps."""

    steps: int
    tokens: int
    seconds: float
    losses: tuple[float, ...]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_quantized(folder: str | Path, *, attn_implementation: str = "sdpa", bf16: bool = True):
    """The recipe's base model: nf4 with double quantization, bf16 compute, on the one device."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = torch.bfloat16 if bf16 else torch.float32
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=quant, dtype=dtype,
                                                attn_implementation=attn_implementation,
                                                device_map={"": device()})


def rows(examples: Sequence[Example], max_tokens: int) -> list[dict[str, Any]]:
    """Token ids cut to `max_tokens` from the right (as SFT cut them) plus the prompt's length,
    which is all the completion-only collator needs to mask."""
    return [{"input_ids": e.input_ids[:max_tokens], "prompt_len": len(e.prompt_ids)} for e in examples]


@dataclass(frozen=True)
class CompletionOnlyCollator:
    """trl's `DataCollatorForCompletionOnlyLM`, which trl dropped: right-pads a batch and puts the
    loss only on the tokens after the prompt (the price), -100 elsewhere."""

    pad_token_id: int
    # real tokens of each batch made, in order (the benchmark's token count); None: not kept
    seen: list[int] | None = field(default=None, compare=False)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        ids = [list(r["input_ids"]) for r in rows]
        # a prompt cut by max_tokens leaves no price token: the whole row is masked
        labels = [[IGNORE] * min(r["prompt_len"], len(i)) + i[r["prompt_len"]:] for r, i in zip(rows, ids, strict=True)]
        batch = pad_batch(ids, self.pad_token_id, side="right", labels=labels)
        if self.seen is not None:
            self.seen.append(int(batch["attention_mask"].sum()))
        return batch


def train_reference(model, tokenizer, examples: Sequence[Example], config: RecipeConfig,
                    workdir: str | Path):
    """Fine-tune `model` (a 4-bit base from `load_quantized`) the recipe's way; returns the peft
    model and the timing of every step after the first (which pays one-time allocation costs).

    Args:
        examples: at least `steps * batch_size` labelled prompts (`pricer.model.prompts.encode`), the
            same ones the project's path trains on.
    """
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    needed = config.steps * config.batch_size
    if len(examples) < needed:
        raise ValueError(f"recipe: {config.steps} steps of {config.batch_size} need {needed} examples "
                         f"(got {len(examples)})")
    # reentrant checkpointing: the recipe's (torch's old default, now a warning when left implicit)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing,
                                            gradient_checkpointing_kwargs={"use_reentrant": True})
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(ATTENTION_MODULES), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)

    cuda = device() == "cuda"
    args = TrainingArguments(
        output_dir=str(workdir), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate, lr_scheduler_type="cosine", warmup_steps=0,
        # paged optimizers page their state through CUDA unified memory: there is none on a CPU
        optim="paged_adamw_32bit" if cuda else "adamw_torch", bf16=config.bf16, use_cpu=not cuda,
        gradient_checkpointing=False,  # already on (or off) through prepare_model_for_kbit_training
        remove_unused_columns=False, save_strategy="no", report_to="none", logging_steps=1,
        disable_tqdm=True, seed=config.seed, data_seed=config.seed, dataloader_num_workers=0)
    collator = CompletionOnlyCollator(tokenizer.pad_token_id, seen=[])
    clock = _StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows(examples[:needed], config.max_tokens)),
                      data_collator=collator, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # it prints each log dict to stdout, under `bench --json`
    trainer.train()
    losses = tuple(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return model, clock.stats(collator.seen, losses)


class _StepClock(TrainerCallback):
    """Wall time of each training step."""

    def __init__(self) -> None:
        self.start = 0.0
        self.ends: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.start:
            _sync()
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        self.ends.append(time.perf_counter())

    def stats(self, batch_tokens: list[int], losses: tuple[float, ...]) -> TrainStats:
        steps = len(self.ends)
        if steps > 1:  # the first step pays for allocations and kernel selection: time the rest
            return TrainStats(steps - 1, sum(batch_tokens[1:steps]), self.ends[-1] - self.ends[0], losses)
        return TrainStats(steps, sum(batch_tokens[:steps]), self.ends[-1] - self.start, losses)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def generate_one_at_a_time(model, tokenizer, prompts: Sequence[Sequence[int]], new_tokens: int = 3
                           ) -> tuple[list[str], float]:
    """The recipe's evaluation: greedy `generate` of `new_tokens` tokens for each prompt alone.

    Args:
        prompts: token ids of each prompt (`Example.prompt_ids`).

    Returns the generated texts and the seconds they took.
    """
    model.eval()
    texts = []
    start = time.perf_counter()
    with torch.inference_mode():
        for ids in prompts:
            input_ids = torch.tensor([list(ids)], device=model.device)
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 max_new_tokens=new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
            texts.append(tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True))
    _sync()
    return texts, time.perf_counter() - start
