"""`pricer plan`: memory, tokens and hours of a study before it is launched."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import REPO

from sweeps.cli.main import main
from sweeps.run.plan import plan_study
from sweeps.spec.study import load_study

# the pricer-8b study's models and budget, written here so this test does not wait on the shipped
# file's data section (its many sources)
STUDY_8B = """\
name: plan-8b
workdir: {workdir}
data: {{source: hf://datasets/McAuley-Lab/Amazon-Reviews-2023/raw/meta_categories/meta_Appliances.jsonl}}
search_space:
  model: {{choices: [llama-3.1-8b, gemma-2-2b]}}
  lora_r: {{choices: [16, 32]}}
  batch_size: {{choices: [4, 16]}}
  epochs: {{choices: [1, 2]}}
fixed: {{max_steps: null, max_tokens: 160, eval_items: 200, test_items: 1000}}
fidelity: {{train_fraction: 0.1}}
refit: {{top_k: 2, train_fraction: 1.0}}
pruner: {{type: median, eval_every: 250}}
n_trials: 40
"""


@pytest.fixture
def study_8b(tmp_path: Path) -> Path:
    path = tmp_path / "plan-8b.yaml"
    path.write_text(STUDY_8B.format(workdir=tmp_path / "runs"))
    return path


def test_8b_weights_memory_by_batch_and_hours_are_plausible(study_8b: Path) -> None:
    plan = plan_study(load_study(study_8b), gpu_gib=80, gpu="h100", train_items=320_000)
    llama, gemma = plan.models
    assert 4 < llama.weights_gib < 7 and gemma.weights_gib < llama.weights_gib
    assert llama.peaks[4][0] < llama.peaks[16][0] < 80 and llama.peaks[16][1] == "fits"
    # a 10 % search trial is about a tenth of an epoch-based refit on all of the data: between
    # 1/20 and 1/3 once loading and evaluation are added
    assert 1 / 20 < llama.hours_per_trial / llama.refit_hours < 1 / 3
    # the 2B model trains ~3x the tokens per second of the 8B one, on the same tokens
    assert llama.tokens_per_trial == gemma.tokens_per_trial
    assert 2 < llama.hours_per_trial / gemma.hours_per_trial < 4
    assert plan.search_hours == pytest.approx(40 * (llama.hours_per_trial + gemma.hours_per_trial) / 2)
    assert plan.refit_trials == 2 and plan.refit_hours > 0
    assert llama.throughput.source.startswith("FLOPs estimate: h100")


def test_a_smaller_gpu_splits_or_refuses_the_big_batch(study_8b: Path) -> None:
    plan = plan_study(load_study(study_8b), gpu_gib=24, train_items=1000)
    llama = plan.models[0]
    assert llama.peaks[16][1] != "fits" and llama.peaks[4][1] in ("fits", "micro-batch 2")


def test_plan_of_cpu_search_with_measured_throughput_prints_minutes_per_trial() -> None:
    from dataclasses import replace

    spec = load_study(REPO / "studies/cpu-search.yaml")
    # the minutes below were measured on prompts without neighbours
    spec = replace(spec, search_space={k: v for k, v in spec.search_space.items() if k != "neighbors"},
                   enqueue=[{k: v for k, v in e.items() if k != "neighbors"} for e in spec.enqueue])
    plan = plan_study(spec, gpu_gib=20, gpu="cpu", train_items=3972,
                      throughput={"smollm2-135m-instruct": (394.9, 5.38), "gemma-3-270m": (430.4, 5.85)})
    plan = json.loads(json.dumps(dataclasses.asdict(plan)))
    minutes = {m["model"]: {int(b): 60 * h for b, h in m["hours_by_batch"].items()} for m in plan["models"]}
    # README: 14.9 min (SmolLM2, batch 8), 16.7 (Gemma, batch 8), 16.9 (Gemma, batch 16), measured
    for model, batch, measured in (("smollm2-135m-instruct", 8, 14.9), ("gemma-3-270m", 8, 16.7),
                                   ("gemma-3-270m", 16, 16.9)):
        assert abs(minutes[model][batch] / measured - 1) <= 0.3, (model, batch, minutes[model][batch])


def test_plan_counts_the_neighbours_prompt_lines(study_8b: Path, tmp_path: Path) -> None:
    plain = plan_study(load_study(study_8b), gpu_gib=80, gpu="h100", train_items=320_000)
    listed = tmp_path / "listed.yaml"
    listed.write_text(study_8b.read_text().replace("  epochs:", "  neighbors: {choices: [0, 5]}\n  epochs:"))
    longer = plan_study(load_study(listed), gpu_gib=80, gpu="h100", train_items=320_000)
    assert longer.tokens_per_item > plain.tokens_per_item
    assert longer.models[0].peaks[16][0] > plain.models[0].peaks[16][0]
    assert longer.models[0].hours_per_trial > plain.models[0].hours_per_trial


def test_bad_plan_input_is_one_line(study_8b: Path, capsys) -> None:
    assert main(["plan", str(study_8b), "--tokens-per-s", "llama-3.1-8b=fast"]) == 2
    assert "--tokens-per-s: a number, or model=number pairs" in capsys.readouterr().err
    assert main(["plan", str(study_8b)]) == 2
    assert "pass --train-items N" in capsys.readouterr().err
