"""A study's search space -> Optuna suggestions (define-by-run, so the conditional parts of a
space are just parameters that are not suggested); `to_config` then makes the trial's config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sweeps.spec.sections import ParamSpec
from sweeps.spec.study import to_config

if TYPE_CHECKING:
    import optuna

__all__ = ["grid", "suggest", "to_config"]


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


def grid(space: Mapping[str, ParamSpec]) -> dict[str, list]:
    """The search space for `optuna.samplers.GridSampler`."""
    return {param.name: param.grid_values() for param in space.values()}
