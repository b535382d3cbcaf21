"""Study files: every shipped one loads; bad ones fail with every problem named at once."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import REPO

from pricer.errors import SpecError
from sweeps.spec.space import grid, suggest, to_config
from sweeps.spec.study import load_study

STUDIES = sorted((REPO / "studies").glob("*.yaml"))

GOOD = """\
name: tiny
data: {source: items.jsonl}
search_space:
  model: {choices: [smollm2-135m-instruct, gemma-3-270m]}
  lora_r: {low: 4, high: 16, log: true}
  lora_alpha_ratio: {choices: [1, 2]}
  learning_rate: {low: 1e-5, high: 1e-3, log: true}
  batch_size: {choices: [2], when: {model: gemma-3-270m}}
fixed: {max_steps: 3, max_tokens: 64}
n_trials: 2
"""


def _write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_shipped_study_loads_and_says_how_to_launch_it(path: Path) -> None:
    spec = load_study(path)
    assert spec.name == path.stem
    header = path.read_text().split("\nname:")[0]
    assert header.startswith("#") and f"pricer launch studies/{path.name}" in header
    comparison = "Compares:" in header  # an A/B of one setting, every arm enqueued
    for word in ("Compares" if comparison else "Searches", "Hardware", "Duration"):
        assert word in header, f"{path.name}: header comment should say {word}"
    searched = {p.target for p in spec.search_space.values()}
    if comparison:
        (name, param), = spec.search_space.items()
        assert sorted(e[name] for e in spec.enqueue) == sorted(param.choices) and spec.n_trials == len(param.choices)
        return
    assert {"model", "lora_r", "learning_rate", "lora_dropout", "target_modules", "batch_size"} <= searched
    assert searched & {"lora_alpha", "lora_alpha_ratio"} and (searched | set(spec.fixed)) & {"max_steps", "epochs"}
    for params in spec.enqueue:
        to_config(spec, params)  # every known-good trial builds a valid TrainConfig


def test_pricer_8b_runs_the_recipe_trial_first() -> None:
    spec = load_study(REPO / "studies/pricer-8b.yaml")
    config = to_config(spec, spec.enqueue[0])
    assert (config.model, config.lora_r, config.lora_alpha, config.learning_rate, config.lora_dropout,
            config.target_modules, config.epochs, config.max_steps) == (
        "llama-3.1-8b", 32, 64, 1e-4, 0.1, "attention", 1, None)
    assert len(spec.search_space["model"].choices) == 6


def test_quickstart_searches_both_pypi_tiny_models() -> None:
    spec = load_study(REPO / "studies/quickstart.yaml")
    assert set(spec.search_space["model"].choices) == {"smollm2-135m-instruct", "gemma-3-270m"}


def test_defaults_put_storage_and_tracking_in_a_per_study_folder(tmp_path: Path) -> None:
    spec = load_study(_write(tmp_path, GOOD))
    assert spec.storage == "sqlite:///runs/tiny/optuna.db"
    assert spec.tracking_uri == "sqlite:///runs/tiny/mlflow.db"
    assert spec.sampler.type == "tpe" and spec.pruner.type == "none" and spec.objective.directions == ["minimize"]
    assert spec.search_space["learning_rate"].low == 1e-5  # YAML 1.1 would read "1e-5" as a string


def test_an_inverted_range_names_file_field_and_values(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("low: 1e-5, high: 1e-3", "low: 1e-3, high: 1e-5"))
    with pytest.raises(SpecError) as err:
        load_study(path)
    assert str(err.value) == f"{path}: search_space.learning_rate: low must be < high (got 0.001, 1e-05)"


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("n_trials: 2", """\
n_trials: 0
sampler: annealing
objective: {metric: accuracy}
enqueue: [{lora_r: 99, warmup: 3}]
colour: blue
""").replace("lora_r: {low: 4", "lora_rank: {low: 4")
    with pytest.raises(SpecError) as err:
        load_study(_write(tmp_path, text))
    message = str(err.value)
    for expected in ("search_space.lora_rank: 'lora_rank' is not a training parameter",
                     "enqueue[0].lora_r: not a search_space parameter", "enqueue[0].warmup",
                     "sampler.type: must be one of tpe, gp, random, grid (got 'annealing')",
                     "objective.metric: must be one of mae, rmsle, hit_rate", "n_trials: must be",
                     "unknown field 'colour'; expected one of data,"):
        assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(("change", "expected"), [
    (("gemma-3-270m]", "gemma-9000]"), "model 'gemma-9000'"),
    (("max_tokens: 64", "max_tokens: 64, target_modules: everything"), "fixed"),
    (("fixed: {", "fixed: {lora_r: 8, "), "fixed.lora_r: also in search_space"),
    (("when: {model:", "when: {lora_dropout:"), "search_space.batch_size.when: 'lora_dropout' must be"),
    (("n_trials: 2", "n_trials: 2\nobjective: {metric: mae, gpu_hours: true}\npruner: {type: median, eval_every: 1}"),
     "pruner: Optuna can't prune multi-objective studies"),
    (("n_trials: 2", "n_trials: 2\npruner: median"), "pruner.eval_every: a median pruner needs"),
    (("n_trials: 2", "timeout: soon"), "timeout: must be seconds or a duration"),
    (("n_trials: 2", "n_trials: 2\ntrial_timeout: forever"), "trial_timeout: must be seconds or a duration"),
    (("n_trials: 2", "n_trials: 2\nsampler: grid"), "search_space.lr"),
    (("lora_r: {low: 4, high: 16, log: true}", "lora_r: {low: 0, high: 16, log: true}"), "log: needs low > 0"),
    (("name: tiny", "name: tiny study"), "name: letters, digits"),
])
def test_bad_study_files_name_the_field(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    with pytest.raises(SpecError, match="^" + str(tmp_path / "x.yaml").replace(".", r"\.") + ": ") as err:
        load_study(_write(tmp_path, text))
    assert expected.replace("search_space.lr", "search_space.learning_rate") in str(err.value)


def test_trial_timeout_reads_a_duration_and_defaults_to_none(tmp_path: Path) -> None:
    assert load_study(_write(tmp_path, GOOD)).trial_timeout is None
    assert load_study(_write(tmp_path, GOOD + "trial_timeout: 30m\n")).trial_timeout == 1800


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"x\.yaml: not valid YAML \(line 3\): expected ',' or '}'"):
        load_study(_write(tmp_path, "name: a\ndata: {source: x\n  bad: [\n"))


def test_conditional_parameters_are_only_suggested_when_their_condition_holds(tmp_path: Path) -> None:
    spec = load_study(_write(tmp_path, GOOD))
    base = {"lora_r": 8, "lora_alpha_ratio": 2, "learning_rate": 1e-4}
    smol = suggest(optuna.trial.FixedTrial({"model": "smollm2-135m-instruct", **base}), spec.search_space)
    gemma = suggest(optuna.trial.FixedTrial({"model": "gemma-3-270m", "batch_size": 2, **base}), spec.search_space)
    assert "batch_size" not in smol and gemma["batch_size"] == 2
    config = to_config(spec, gemma)
    assert (config.batch_size, config.lora_r, config.lora_alpha, config.max_steps) == (2, 8, 16, 3)


def test_grid_sampler_gets_every_combination(tmp_path: Path) -> None:
    text = GOOD.replace("lora_r: {low: 4, high: 16, log: true}", "lora_r: {low: 4, high: 12, step: 4}") \
        .replace("learning_rate: {low: 1e-5, high: 1e-3, log: true}", "learning_rate: {choices: [1e-4]}")
    spec = load_study(_write(tmp_path, text + "sampler: grid\n"))
    assert grid(spec.search_space)["lora_r"] == [4, 8, 12]


def test_data_source_falls_back_when_the_local_sample_is_absent(tmp_path: Path, sample_path: Path) -> None:
    spec = load_study(REPO / "studies/quickstart.yaml")
    assert Path(spec.data.resolve(spec.path)) == sample_path.resolve()
    moved = load_study(_write(tmp_path, (REPO / "studies/quickstart.yaml").read_text()
                              .replace("../shared/", "../no-such-folder/"), "quickstart.yaml"))
    assert moved.data.resolve(moved.path).startswith("hf://datasets/McAuley-Lab/Amazon-Reviews-2023/")


def test_a_worker_joining_a_seeded_study_does_not_replay_its_proposals(tmp_path: Path) -> None:
    from sweeps.run.studies import open_study

    text = GOOD + f"storage: sqlite:///{tmp_path}/optuna.db\nsampler: {{type: random, seed: 7}}\n"
    spec = load_study(_write(tmp_path, text))
    first = open_study(spec)
    trial = first.ask()
    proposed = suggest(trial, spec.search_space)
    first.tell(trial, 1.0)
    joined = open_study(spec)  # a second worker, same file, same seed
    assert suggest(joined.ask(), spec.search_space) != proposed


def test_workers_started_by_hand_together_on_a_seeded_study_propose_different_trials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `pricer launch` of one file, no PRICER_WORKER number (two terminals, two machines):
    both opened the empty study alike and proposed the same trials, half the budget spent twice.
    The first on the roll keeps the file's seed; the next shifts it by its rank."""
    from sweeps.run.launch import seed_by_rank
    from sweeps.run.presence import Presence
    from sweeps.run.studies import WORKER_ENV, open_study

    monkeypatch.delenv(WORKER_ENV, raising=False)
    text = GOOD + f"storage: sqlite:///{tmp_path}/optuna.db\nsampler: {{type: random, seed: 7}}\n"
    spec = load_study(_write(tmp_path, text))
    alone = suggest(open_study(spec.with_overrides(storage=f"sqlite:///{tmp_path}/alone.db")).ask(),
                    spec.search_space)
    studies = [open_study(spec), open_study(spec)]  # both open the empty study before either proposes
    roll = [Presence(study, 30, 120) for study in studies]
    try:
        assert sorted(p.rank() for p in roll) == [0, 1]
        for study, presence in zip(studies, roll, strict=True):
            seed_by_rank(spec, study, presence)
        first, second = (suggest(study.ask(), spec.search_space) for study in studies)
    finally:
        for presence in roll:
            presence.leave()
    assert first != second
    assert first == alone  # the first worker, like a worker alone, proposes what the seed gives


def test_an_unknown_key_is_named_with_the_keys_its_section_takes(tmp_path: Path) -> None:
    text = GOOD.replace("lora_r: {low: 4, high: 16, log: true}", "lora_r: {low: 4, high: 16, lgo: true}")
    with pytest.raises(SpecError) as err:
        load_study(_write(tmp_path, text + "sampler: {type: tpe, sed: 3, startup: 2}\n"))
    message = str(err.value)
    assert "sampler: unknown fields 'sed', 'startup'; expected one of n_startup_trials, seed, type" in message
    # a search_space entry lists the keys a file writes (param, type), not the model's own names
    assert ("search_space.lora_r: unknown field 'lgo'; expected one of choices, high, log, low, param, step, "
            "type, when") in message


def test_a_replaced_section_is_checked_again(tmp_path: Path) -> None:
    import dataclasses

    from pydantic import ValidationError

    spec = load_study(_write(tmp_path, GOOD + "pruner: {type: median, eval_every: 2}\n"))
    assert dataclasses.replace(spec.pruner, eval_every=4).eval_every == 4
    with pytest.raises(ValidationError, match="eval_every"):
        dataclasses.replace(spec.pruner, eval_every=0)  # a median pruner needs reports
    with pytest.raises(ValidationError, match="unknown model"):
        dataclasses.replace(spec, fixed={**spec.fixed, "model": "no-such-model"},
                            search_space={k: v for k, v in spec.search_space.items() if k not in ("model", "batch_size")})
