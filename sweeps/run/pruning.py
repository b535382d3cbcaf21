"""Which trials stop early: Optuna's step pruners on the validation $ error, and its
`WilcoxonPruner` on the per-item errors of each validation, paired with the best trial's.

The validation $ error of 200 items moves by several dollars between two equally good trials, so
a median pruner comparing means stops good trials by bad luck. The Wilcoxon signed-rank test pairs
each item's error with the best trial's error on the same item at the same step, and prunes only
when the trial is worse with the given confidence.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

if TYPE_CHECKING:
    from sweeps.spec.study import StudySpec

# The per-item absolute errors of the validation at step N live in this trial user attribute
# (same items, same order in every trial); intermediate values keep the step's $ error, so the
# step pruners and Optuna's plots see one number per step.
ERRORS_ATTR = "val_errors:{step}"


def errors_key(step: int) -> str:
    return ERRORS_ATTR.format(step=step)


def record_errors(trial: optuna.Trial, step: int, errors: Sequence[float]) -> None:
    trial.set_user_attr(errors_key(step), [round(float(e), 4) for e in errors])


def _paired_view(errors: Sequence[float], state: TrialState, value: float | None = None,
                 ) -> optuna.trial.FrozenTrial:
    return create_trial(state=state, value=value, intermediate_values=dict(enumerate(errors)))


class PairedItemsPruner(optuna.pruners.BasePruner):
    """`WilcoxonPruner` on per-item errors at the trial's latest step, optionally after a step
    pruner: the step pruner may stop the trial first; if it lets training continue, the paired
    test decides.

    Args:
        p_threshold: prune when the one-sided p-value that this trial is worse than the best is below it.
        after: a step pruner (median, hyperband, successive halving) asked first, or None.
    """

    def __init__(self, p_threshold: float, after: optuna.pruners.BasePruner | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.wilcoxon = optuna.pruners.WilcoxonPruner(p_threshold=p_threshold)
        self.after = after

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self.after is not None and self.after.prune(study, trial):
            return True
        step = trial.last_step
        mine = trial.user_attrs.get(errors_key(step)) if step is not None else None
        try:
            best = study.best_trial
        except ValueError:  # no finished trial yet
            return False
        theirs = best.user_attrs.get(errors_key(step))
        if not mine or not theirs or len(mine) != len(theirs):
            return False  # the best trial never reached this step (or scored other items)
        # errors are dollars whatever the objective: lower is better
        view = SimpleNamespace(best_trial=_paired_view(theirs, TrialState.COMPLETE, best.value),
                               direction=StudyDirection.MINIMIZE)
        return self.wilcoxon.prune(view, _paired_view(mine, TrialState.RUNNING))


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study file's pruner: ``median``, ``hyperband``, ``successive_halving``, ``wilcoxon``,
    a step pruner followed by the paired test (``median+wilcoxon``...), or ``none``."""
    p = spec.pruner
    step_type, _, paired = p.type.partition("+")
    if step_type == "wilcoxon":
        step_type, paired = "", "wilcoxon"
    step: optuna.pruners.BasePruner | None = None
    if step_type == "median":
        step = optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    elif step_type == "hyperband":
        step = optuna.pruners.HyperbandPruner(min_resource=p.min_resource, reduction_factor=p.reduction_factor)
    elif step_type == "successive_halving":
        step = optuna.pruners.SuccessiveHalvingPruner(min_resource=p.min_resource,
                                                      reduction_factor=p.reduction_factor)
    if paired:
        return PairedItemsPruner(p.p_threshold, after=step)
    return step if step is not None else optuna.pruners.NopPruner()
