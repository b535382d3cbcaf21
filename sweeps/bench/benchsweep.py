"""`pricer bench sweep STUDY.yaml`: what the search and its pruning buy, measured in one run.

Three arms on the same data, each a real study in its own folder:

- ``search``: the study as written (its sampler and pruner, the default enqueued first);
- ``no pruning``: the same study with ``pruner: none`` (every trial runs to its end);
- ``default alone``: the enqueued default trial only, its steps scaled so that it spends the
  search's whole compute.

It prints, as ratios against the search in the same run: compute spent (trial-seconds), the best
trial's test $ error in each arm, and the best against the default. From the unpruned arm it also
measures how well a short run ranks configurations: the Spearman rank correlation between each
trial's first validation and its final one (what multi-fidelity pruning relies on).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from pricer.errors import SpecError
from sweeps.spec.study import ParamSpec, PrunerSpec, StudySpec
from sweeps.track.stores import sqlite_url


@dataclass(frozen=True)
class Arm:
    name: str
    trials: int
    pruned: int
    trial_seconds: float
    best_trial: int | None
    best_test_mae: float | None
    best_val_mae: float | None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _arm_spec(spec: StudySpec, root: Path, name: str, **changes) -> StudySpec:
    """An arm of the bench: its own stores and folder; no refit (the arms compare searches)."""
    changes.setdefault("refit", None)
    workdir = root / name.replace(" ", "-")
    return dataclasses.replace(spec, name=f"{spec.name}-{name.replace(' ', '-')}", workdir=workdir,
                               storage=sqlite_url(workdir / "optuna.db"),
                               tracking_uri=sqlite_url(workdir / "mlflow.db"), **changes)


def scaled(spec: StudySpec, *, n_trials: int | None = None, max_steps: int | None = None,
           eval_items: int | None = None, test_items: int | None = None) -> StudySpec:
    """The same search on a smaller budget: fewer trials, fewer validation or test items, and/or
    every trial `max_steps` long with its warm-up, validation and pruning steps scaled alike (so
    it still has as many chances to be pruned). Three arms of a 60-90 minute study take hours;
    this lets one run measure the same comparison in less."""
    for flag, value in (("--eval-items", eval_items), ("--test-items", test_items)):
        if value is not None and value < 1:
            raise SpecError(f"{flag}: must be >= 1 (got {value})")
    items = {k: v for k, v in (("eval_items", eval_items), ("test_items", test_items)) if v is not None}
    if items:
        spec = dataclasses.replace(spec, fixed={**spec.fixed, **items})
    if n_trials is not None:
        if n_trials < 1:
            raise SpecError(f"--n-trials: must be >= 1 (got {n_trials})")
        spec = dataclasses.replace(spec, n_trials=n_trials)
    if max_steps is None:
        return spec
    if max_steps < 1:
        raise SpecError(f"--max-steps: must be >= 1 (got {max_steps})")
    if "max_steps" in spec.search_space:
        raise SpecError(f"{spec.path}: max_steps is searched; --max-steps scales a fixed max_steps only")
    old = _default_steps(spec)
    factor = max_steps / old

    def scale(steps: int) -> int:
        return max(1, round(steps * factor)) if steps else 0

    fixed = {**spec.fixed, "max_steps": max_steps}
    for name in ("warmup_steps", "checkpoint_every"):
        if isinstance(fixed.get(name), int):
            fixed[name] = scale(fixed[name])
    pruner = dataclasses.replace(spec.pruner, eval_every=scale(spec.pruner.eval_every),
                                 n_warmup_steps=scale(spec.pruner.n_warmup_steps),
                                 min_resource=scale(spec.pruner.min_resource))
    enqueue = tuple({k: v for k, v in e.items() if k != "max_steps"} for e in spec.enqueue)
    return dataclasses.replace(spec, fixed=fixed, pruner=pruner, enqueue=enqueue)


def _default_steps(spec: StudySpec) -> int:
    default = spec.enqueue[0]
    steps = default.get("max_steps", spec.fixed.get("max_steps"))
    if not isinstance(steps, int):
        raise SpecError(f"{spec.path}: bench sweep needs max_steps (fixed, or in the enqueued default) "
                        "to scale the default's budget")
    return steps


def default_alone(spec: StudySpec, root: Path, steps: int) -> StudySpec:
    """The enqueued default as a one-trial study of `steps` optimizer steps, validated once at the
    end: with nothing to prune, its budget goes to training."""
    default = dict(spec.enqueue[0])
    space = {}
    for name, value in default.items():
        if name == "max_steps":
            continue
        target = spec.search_space[name].target
        space[name] = ParamSpec(name, target, "categorical", choices=(value,))
    fixed = {**spec.fixed, "max_steps": steps}
    return _arm_spec(spec, root, "default alone", search_space=space, fixed=fixed, enqueue=(),
                     pruner=PrunerSpec(type="none", eval_every=0), n_trials=1,
                     sampler=dataclasses.replace(spec.sampler, type="random", n_startup_trials=None))


def _measure(spec: StudySpec) -> tuple[Arm, object]:
    from optuna.trial import TrialState

    from sweeps.results.leaderboard import leaderboard
    from sweeps.run.launch import launch

    study = launch(spec, progress=False)
    trials = study.get_trials(deepcopy=False)
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                  if t.datetime_complete and t.datetime_start)
    rows = [r for r in leaderboard(spec.tracking_uri, spec.name) if not r.baseline and r.rank is not None]
    best = rows[0] if rows else None
    arm = Arm(spec.name, len(trials), sum(t.state == TrialState.PRUNED for t in trials), seconds,
              best.trial if best else None, best.test_mae if best else None, best.mae if best else None)
    return arm, study


def rank_correlation(study) -> float | None:
    """Spearman correlation between each finished trial's first and last validation value."""
    from optuna.trial import TrialState
    from scipy.stats import spearmanr

    pairs = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        steps = sorted(t.intermediate_values)
        if len(steps) >= 2:
            pairs.append((t.intermediate_values[steps[0]], t.intermediate_values[steps[-1]]))
    if len(pairs) < 3:
        return None
    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)


def alone_steps(spec: StudySpec, search_study, budget_s: float) -> int:
    """How many steps the default gets to spend `budget_s` trial-seconds: the budget less what its
    trial in the search spent beside training (loading, validation, test), over its seconds per
    optimizer step. A trial's whole duration per step would leave the default alone under half
    the budget when most of a short trial is loading and validation."""
    from mlflow.tracking import MlflowClient

    from sweeps.run.objective import RUN_ID_ATTR

    trial = search_study.trials[0]
    seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    steps = _default_steps(spec)
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    metrics = MlflowClient(spec.tracking_uri).get_run(run_id).data.metrics if run_id else {}
    train_s = metrics.get("train_s") or seconds  # runs logged before train_s: the whole trial
    per_step = train_s / metrics.get("steps", steps)
    return max(1, round((budget_s - (seconds - train_s)) / max(per_step, 1e-9)))


def run_sweep_bench(spec: StudySpec, root: Path) -> dict:
    """Run the three arms under `root` and return the table (JSON-ready)."""
    if not spec.enqueue:
        raise SpecError(f"{spec.path}: bench sweep compares against the enqueued default; add one under enqueue:")
    root = Path(root).resolve()
    search_spec = _arm_spec(spec, root, "search")
    search, search_study = _measure(search_spec)
    plain, plain_study = _measure(_arm_spec(spec, root, "no pruning",
                                            pruner=dataclasses.replace(spec.pruner, type="none")))
    steps = alone_steps(search_spec, search_study, search.trial_seconds)
    alone, _ = _measure(default_alone(spec, root, steps))

    from sweeps.results.leaderboard import leaderboard

    default_row = next(r for r in leaderboard(sqlite_url(root / "search" / "mlflow.db"), search.name)
                       if not r.baseline and r.trial == 0)

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b in (None, 0) else a / b

    return {
        "arms": [search.to_dict(), plain.to_dict(), alone.to_dict()],
        "default": {"trial": 0, "state": default_row.state, "test_mae": default_row.test_mae,
                    "scaled_steps": steps},
        "ratios": {
            "compute_no_pruning_vs_search": ratio(plain.trial_seconds, search.trial_seconds),
            "compute_default_alone_vs_search": ratio(alone.trial_seconds, search.trial_seconds),
            "best_test_mae_search_vs_no_pruning": ratio(search.best_test_mae, plain.best_test_mae),
            "best_test_mae_search_vs_default": ratio(search.best_test_mae, default_row.test_mae),
            "best_test_mae_default_alone_vs_default": ratio(alone.best_test_mae, default_row.test_mae),
            # the question a search has to answer: better than the same compute spent on the default?
            "best_test_mae_search_vs_default_alone": ratio(search.best_test_mae, alone.best_test_mae),
        },
        "rank_correlation_first_vs_final_validation": rank_correlation(plain_study),
    }
