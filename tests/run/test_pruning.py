"""The paired per-item test (Optuna's WilcoxonPruner) on a real SQLite study: a clearly worse
trial stops at its first validation, a close one goes on, and a step pruner can stop one first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from sweeps.run.pruning import PairedItemsPruner, make_pruner, record_errors
from sweeps.spec.study import load_study

# 200 validation items: the best trial's per-item $ errors, spread like a real pricer's
RNG = np.random.default_rng(0)
BEST = RNG.gamma(1.0, 60.0, size=200)


def _study(tmp_path: Path, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", pruner=pruner)
    best = study.ask()
    for step, errors in ((3, BEST * 1.3), (6, BEST)):
        record_errors(best, step, errors)
        best.report(float(errors.mean()), step)
    study.tell(best, float(BEST.mean()))
    return study


def _should_prune(study: optuna.Study, errors: np.ndarray, step: int = 3, *, paired: bool = True) -> bool:
    trial = study.ask()
    if paired:
        record_errors(trial, step, errors)
    trial.report(float(errors.mean()), step)
    return trial.should_prune()


def test_clearly_worse_trial_is_pruned_at_its_first_validation(tmp_path: Path) -> None:
    study = _study(tmp_path, PairedItemsPruner(p_threshold=0.05))
    worse = BEST * 1.3 + RNG.normal(25, 10, size=200).clip(0)  # $25 worse on most items
    assert _should_prune(study, worse)


def test_close_trial_is_not_pruned(tmp_path: Path) -> None:
    study = _study(tmp_path, PairedItemsPruner(p_threshold=0.05))
    # as good as the best trial was at step 3, item by item, give or take noise
    close = (BEST * 1.3 + RNG.normal(0, 15, size=200)).clip(0)
    assert not _should_prune(study, close)


def test_no_pruning_where_the_best_trial_never_validated(tmp_path: Path) -> None:
    study = _study(tmp_path, PairedItemsPruner(p_threshold=0.05))
    assert not _should_prune(study, BEST * 3, step=4)


def test_step_pruner_decides_first(tmp_path: Path) -> None:
    # without per-item errors the paired test can't prune: only the median pruner, seeing step 3's
    # mean far above the best trial's, stops the first trial; the second is below the median
    pruner = PairedItemsPruner(p_threshold=0.05, after=optuna.pruners.MedianPruner(n_startup_trials=1))
    study = _study(tmp_path, pruner)
    assert _should_prune(study, BEST * 2, paired=False)
    assert not _should_prune(study, BEST * 1.2, paired=False)
    assert not PairedItemsPruner(p_threshold=0.05).prune(study, study.trials[-1])


@pytest.mark.parametrize("kind, expected", [
    ("wilcoxon", (PairedItemsPruner, type(None))),
    ("median+wilcoxon", (PairedItemsPruner, optuna.pruners.MedianPruner)),
    ("successive_halving", (optuna.pruners.SuccessiveHalvingPruner, None)),
])
def test_study_file_pruner_types(tmp_path: Path, kind: str, expected: tuple) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"""name: s
data: {{source: items.jsonl}}
search_space: {{lora_r: {{choices: [4, 8]}}}}
fixed: {{model: smollm2-135m-instruct}}
pruner: {{type: {kind}, eval_every: 2, p_threshold: 0.05, min_resource: 2}}
n_trials: 2
""")
    pruner = make_pruner(load_study(path))
    assert isinstance(pruner, expected[0])
    if expected[1] is not None:
        assert isinstance(pruner.after, expected[1])
        assert pruner.wilcoxon._p_threshold == 0.05
