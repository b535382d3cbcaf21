"""`pricer bench fidelity STUDY.yaml`: does a search on a fraction of the data rank
configurations like one on all of it?

The same N configurations (the study's enqueued default first, then draws of a seeded random
sampler from its space) are trained at each fraction of the train split (`pricer.data.fraction`:
nested, so the 10 % items lie inside the 25 % ones) and scored on the same test items. Against the
full-data run (fraction 1.0) it reports, per fraction:

- the Spearman rank correlation of the configurations' test errors with their full-data errors;
- the regret: the full-data test error of the fraction's winner minus that of the true winner.

Both across all configurations (models mixed: arXiv 2402.02314 warns that small-data runs can
misrank base models) and within each model that has at least two configurations (arXiv
2602.11171 reports 0.84-0.94 at 5-10 % of the data for LoRA on one model).

Budget: a fraction only saves compute when training is epoch-based; with a fixed ``max_steps``
every fraction trains as many steps and the fraction changes only what those steps see (repeats
of fewer items). The bench therefore trains ``epochs`` passes by default (``max_steps`` unset),
so a 10 % trial costs about a tenth of a full one, as it would in `studies/pricer-8b.yaml`;
``max_steps`` (``--max-steps``) measures the other regime. ``train_items`` caps the train split
first (the fraction is taken of what remains) so that CPU runs stay short.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pricer.errors import SpecError
from sweeps.spec.study import FidelitySpec, PrunerSpec, StudySpec


@dataclass(frozen=True)
class FidelityRun:
    """One configuration trained at one fraction."""

    config: int
    model: str
    fraction: float
    train_items: int
    steps: int
    val_mae: float
    test_mae: float
    seconds: float  # the whole run: process start, loading, training, validation, test
    train_s: float  # the optimizer steps alone


def draw_configs(spec: StudySpec, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` parameter sets: the study's enqueued default first (if any), then random draws.

    Raises:
        SpecError: n < 2 (nothing to rank).
    """
    import optuna

    from sweeps.run.studies import optuna_experimental
    from sweeps.spec.space import suggest

    if n < 2:
        raise SpecError(f"--n-configs: at least 2 configurations to rank (got {n})")
    configs = [dict(p) for p in spec.enqueue[:1]]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with optuna_experimental():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while len(configs) < n:
        trial = study.ask()
        params = suggest(trial, spec.search_space)
        study.tell(trial, 0.0)
        if params not in configs:
            configs.append(params)
    return configs


def bench_spec(spec: StudySpec, *, max_steps: int | None = None, epochs: float | None = None,
               train_items: int | None = None, eval_items: int | None = None,
               test_items: int | None = None) -> StudySpec:
    """The study with the bench's budget: epoch-based unless `max_steps` is given, no warm-up
    (the same schedule at every fraction), no pruning, validated once at the end."""
    fixed = dict(spec.fixed)
    if max_steps is not None:
        fixed["max_steps"] = max_steps
    elif "max_steps" not in spec.search_space:
        fixed["max_steps"] = None
    for name, value in (("epochs", epochs), ("train_items", train_items), ("eval_items", eval_items),
                        ("test_items", test_items)):
        if value is not None:
            if value <= 0:
                raise SpecError(f"--{name.replace('_', '-')}: must be > 0 (got {value})")
            fixed[name] = value
    if not fixed.get("test_items", 1):
        raise SpecError("bench fidelity ranks on the test split: test_items must be >= 1")
    fixed.pop("eval_every", None)
    # a 10 % run of a CPU-sized split is a few steps: a study's warm-up would be all of them
    fixed["warmup_steps"] = 0
    return dataclasses.replace(spec, fixed=fixed, pruner=PrunerSpec(type="none"), refit=None)


def parse_fractions(text: str) -> list[float]:
    """``0.1,0.25,1.0`` -> [0.1, 0.25, 1.0]; 1.0 (the reference) must be among them."""
    from pricer.data.fraction import check_fraction

    try:
        fractions = sorted({check_fraction(float(x), "--fractions") for x in text.split(",") if x.strip()})
    except ValueError:
        raise SpecError(f"--fractions: numbers in (0, 1] separated by commas (got {text!r})") from None
    if not fractions or fractions[-1] != 1.0:
        raise SpecError(f"--fractions: include 1.0, the full-data reference (got {text!r})")
    return fractions


def run_fidelity_bench(spec: StudySpec, fractions: list[float], configs: list[dict], out: Path, *,
                       progress: bool = False) -> dict:
    """Train every configuration at every fraction (the full data first: a bench stopped early
    still compares what it measured against it), one process each
    (`sweeps.run.process.run_in_child`), and summarise. ``out/fidelity.json`` is rewritten after
    each run."""
    from pricer.model import catalog
    from sweeps.run.process import run_in_child
    from sweeps.run.studies import prepare_data
    from sweeps.spec.space import to_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(dataclasses.replace(spec, workdir=out), progress=progress)
    runs: list[FidelityRun] = []
    started = time.monotonic()
    for fraction in sorted(fractions, reverse=True):
        at = dataclasses.replace(spec, fidelity=FidelitySpec(train_fraction=fraction, seed=spec.fidelity.seed))
        for index, params in enumerate(configs):
            config = to_config(at, params)
            model_spec = catalog.resolve(config.model, spec.models)
            folder = out / f"f{fraction:g}-c{index}"
            result, _ = run_in_child(config, str(data), folder, model_spec, lambda step, m: False,
                                     progress=progress)
            runs.append(FidelityRun(index, config.model, fraction, _train_size(data, config), result.steps,
                                    result.val_metrics.mae, result.test_metrics.mae, result.wall_s,
                                    result.train_s))
            summary = summarise(runs, fractions, configs)
            summary["wall_s"] = time.monotonic() - started
            (out / "fidelity.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _train_size(data: Path, config) -> int:
    from pricer.data.dataset import as_items, load_splits
    from pricer.data.fraction import fraction_indices

    texts = [item.text for item in as_items(load_splits(data)["train"])[:config.train_items]]
    return len(fraction_indices(texts, config.train_fraction, config.fraction_seed))


def _spearman(x: list[float], y: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def _compare(at: dict[int, float], full: dict[int, float]) -> dict:
    keys = sorted(set(at) & set(full))
    if len(keys) < 2:
        return {"n": len(keys), "spearman": None, "regret": None, "winner": None}
    winner = min(keys, key=lambda k: at[k])
    return {"n": len(keys), "spearman": _spearman([at[k] for k in keys], [full[k] for k in keys]),
            "regret": full[winner] - min(full[k] for k in keys), "winner": winner}


def summarise(runs: list[FidelityRun], fractions: list[float], configs: list[dict]) -> dict:
    """Per fraction: correlation and regret against the full-data run, across all configurations
    and within each model with >= 2 configurations (with 2, the correlation is +1 or -1: whether
    the pair keeps its order); plus every run and the compute per fraction."""
    errors: dict[float, dict[int, float]] = defaultdict(dict)
    seconds: dict[float, float] = defaultdict(float)
    train_s: dict[float, float] = defaultdict(float)
    models = {}
    for r in runs:
        errors[r.fraction][r.config] = r.test_mae
        seconds[r.fraction] += r.seconds
        train_s[r.fraction] += r.train_s
        models[r.config] = r.model
    full = errors.get(1.0, {})
    by_model: dict[str, list[int]] = defaultdict(list)
    for index, model in sorted(models.items()):
        by_model[model].append(index)
    table = []
    for fraction in fractions:
        at = errors.get(fraction, {})
        within = {}
        for model, indices in by_model.items():
            if len(indices) >= 2:
                within[model] = _compare({k: at[k] for k in indices if k in at},
                                         {k: full[k] for k in indices if k in full})
        table.append({"fraction": fraction, "across_models": _compare(at, full), "within_model": within,
                      "seconds": seconds.get(fraction, 0.0), "train_s": train_s.get(fraction, 0.0),
                      "train_s_vs_full": train_s[fraction] / train_s[1.0] if train_s.get(1.0) else None})
    return {"configs": configs, "fractions": table, "runs": [dataclasses.asdict(r) for r in runs]}
