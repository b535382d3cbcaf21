"""`TrainConfig`: everything a trial varies, declared and checked where it is made (a study file,
flags, a notebook); the one model `pricer.train.loop.train` takes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass as declared

from pricer.declared import DECLARED, one_line, validate
from pricer.errors import SpecError
from pricer.model.catalog import TARGET_KINDS
from pricer.model.loading import QUANTIZATIONS
from pricer.model.prompts import DEFAULT_MAX_TOKENS
from pricer.predict.evaluate import EVAL_BATCH_SIZE
from pricer.predict.pricetree import DECODES, DEFAULT_DECODE

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
