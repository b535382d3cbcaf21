"""`pricer bench sweep`: three real arms of a tiny study (search, no pruning, the default alone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from pricer.errors import SpecError
from sweeps.bench.benchsweep import alone_steps, default_alone, scaled
from sweeps.cli.main import main
from sweeps.spec.study import load_study

STUDY = """\
name: bench-sweep-test
workdir: {workdir}
data: {{source: {sample}, limit: 300}}
search_space:
  model: {{choices: [toy-llama-3.1]}}
  lora_r: {{choices: [4, 8]}}
  learning_rate: {{low: 1.0e-4, high: 3.0e-3, log: true}}
fixed: {{max_steps: 2, batch_size: 2, max_tokens: 48, eval_items: 4, test_items: 4, warmup_steps: 0,
        target_modules: attention}}
enqueue:
  - {{model: toy-llama-3.1, lora_r: 8, learning_rate: 1.0e-3}}
sampler: {{type: random, seed: 0}}
pruner: {{type: median+wilcoxon, eval_every: 1, n_startup_trials: 1}}
n_trials: 2
"""


def _study(tmp_path: Path, sample_path: Path) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(STUDY.format(workdir=tmp_path / "runs", sample=sample_path))
    return path


def test_default_alone_is_the_enqueued_trial_with_the_search_budget_in_steps(tmp_path: Path, sample_path: Path) -> None:
    spec = default_alone(load_study(_study(tmp_path, sample_path)), tmp_path / "bench", steps=7)
    assert spec.n_trials == 1 and spec.enqueue == () and spec.fixed["max_steps"] == 7
    assert {k: p.choices for k, p in spec.search_space.items()} == {
        "model": ("toy-llama-3.1",), "lora_r": (8,), "learning_rate": (1e-3,)}
    assert spec.pruner.type == "none" and spec.workdir == tmp_path / "bench" / "default-alone"


def test_a_smaller_budget_scales_steps_validation_and_pruning_alike() -> None:
    spec = scaled(load_study(REPO / "studies" / "cpu-search.yaml"), n_trials=3, max_steps=40,
                  eval_items=100)
    assert spec.n_trials == 3 and spec.fixed["max_steps"] == 40
    assert spec.fixed["eval_items"] == 100 and spec.fixed["test_items"] == 468
    # 120 steps, warm-up 10, validation every 40 -> a third of each
    assert spec.fixed["warmup_steps"] == 3 and spec.pruner.eval_every == 13
    assert spec.pruner.type == "median+wilcoxon" and spec.enqueue[0]["model"] == "smollm2-135m-instruct"
    with pytest.raises(SpecError, match="max_steps is searched"):
        scaled(load_study(REPO / "studies" / "quickstart.yaml"), max_steps=5)


@pytest.mark.slow
def test_bench_sweep_runs_three_arms_and_prints_ratios_against_the_search(tmp_path: Path, sample_path: Path,
                                                                          capsys) -> None:
    path = _study(tmp_path, sample_path)
    # one trial an arm (--n-trials): the arms' mechanics, at a third of the study's five trials
    assert main(["bench", "sweep", str(path), "--out", str(tmp_path / "bench"), "--n-trials", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    search, plain, alone = result["arms"]
    assert [search["trials"], plain["trials"], alone["trials"]] == [1, 1, 1]
    assert plain["pruned"] == 0
    assert all(a["trial_seconds"] > 0 and a["best_test_mae"] is not None for a in (search, plain, alone))
    assert result["default"]["trial"] == 0
    # with one trial in the search, the default alone gets its own budget: its own 2 steps
    assert result["default"]["scaled_steps"] == 2
    # the default's loading, validation and test are not per-step costs: in the budget of two of
    # its trials it gets more than the 2 x 2 steps its whole duration per step would give
    import dataclasses

    import optuna

    search_db = tmp_path / "bench" / "search"
    search_study = optuna.load_study(study_name=search["name"], storage=f"sqlite:///{search_db / 'optuna.db'}")
    default = search_study.trials[0]
    duration = (default.datetime_complete - default.datetime_start).total_seconds()
    search_spec = dataclasses.replace(load_study(path), tracking_uri=f"sqlite:///{search_db / 'mlflow.db'}")
    assert alone_steps(search_spec, search_study, 2 * duration) > 2 * 2
    # every arm finished with a time and a test error: no ratio is left out for want of one
    assert all(value is not None for value in result["ratios"].values()), result["ratios"]
