"""A study's search space -> Optuna suggestions -> a `TrainConfig` (define-by-run, so the
conditional parts of a space are just parameters that are not suggested)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sweeps.spec.study import ALPHA_RATIO, ParamSpec, StudySpec

if TYPE_CHECKING:
    import optuna

    from pricer.train.loop import TrainConfig


def suggest(trial: optuna.Trial, space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """Ask the trial for every active parameter, in file order (a ``when:`` sees earlier ones)."""
    chosen: dict[str, Any] = {}
    for param in space.values():
        if not param.active(chosen):
            continue
        if param.kind == "categorical":
            value = trial.suggest_categorical(param.name, list(param.choices))
        elif param.kind == "int":
            value = trial.suggest_int(param.name, int(param.low), int(param.high),
                                      step=int(param.step or 1), log=param.log)
        else:
            value = trial.suggest_float(param.name, float(param.low), float(param.high),
                                        step=param.step, log=param.log)
        chosen[param.name] = value
    return chosen


def to_config(spec: StudySpec, params: Mapping[str, Any]) -> TrainConfig:
    """The trial's `TrainConfig`: the study's fixed values, its share of the train split
    (``fidelity``), the evaluation interval its pruner needs, then the suggested parameters
    (``lora_alpha_ratio`` becomes ``lora_alpha``).

    Raises:
        SpecError: a combination TrainConfig rejects, naming the field.
    """
    from pricer.train.loop import TrainConfig

    values: dict[str, Any] = dict(spec.fixed)
    if spec.fidelity.train_fraction < 1:
        values["train_fraction"] = spec.fidelity.train_fraction
        values["fraction_seed"] = spec.fidelity.seed
    if spec.pruner.type != "none" or spec.pruner.eval_every:
        values["eval_every"] = spec.pruner.eval_every
    ratio = None
    for name, value in params.items():
        target = spec.search_space[name].target
        if target == ALPHA_RATIO:
            ratio = value
        else:
            values[target] = value
    if ratio is not None:
        rank = values.get("lora_r", _default("lora_r"))
        values["lora_alpha"] = max(1, round(ratio * rank))
    return TrainConfig.from_dict(values)


def grid(space: Mapping[str, ParamSpec]) -> dict[str, list]:
    """The search space for `optuna.samplers.GridSampler`."""
    return {param.name: param.grid_values() for param in space.values()}


def _default(name: str) -> Any:
    from pricer.train.loop import TrainConfig

    field = {f.name: f for f in dataclasses.fields(TrainConfig)}[name]
    return field.default
