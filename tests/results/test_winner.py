"""The verdict page's judgement on a study written to a real MLflow store the way a launch writes
it (trial runs with their per-item predictions, baselines through `log_baselines`), with per-item
errors chosen so the outcome is known: who wins, what each row is compared with, the disagreement
line, the cost plot, and the leaderboard's line about failed trials. The real tiny study's page,
rendered in Chromium, is in tests/test_sweep.py."""

from __future__ import annotations

import pytest

from pricer.metrics import score
from pricer.predict.compare import compare, dollars
from sweeps.track.records import log_baselines, log_predictions
from sweeps.track.tracking import REASON, ROLE, STATE, STUDY, TRIAL, MlflowTracker

TRUTH = [10.0 + 7 * i for i in range(30)]
MODELS = (("smollm2-135m-instruct", "instruct"), ("gemma-3-270m", "base"))  # even, odd trial numbers


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite MLflow store for the module (creating its tables is the slow part); each test
    writes its own study (experiment) into it."""
    return f"sqlite:///{tmp_path_factory.mktemp('verdict') / 'mlflow.db'}"


def _off_by(errors: list[float]) -> list[float]:
    """Predictions `errors` dollars above the true prices (so the per-item errors are `errors`)."""
    return [t + e for t, e in zip(TRUTH, errors, strict=True)]


def _study(uri: str, name: str, trials: dict[int, list[float] | tuple[list[float], list[float]]],
           baselines: dict[str, list[float]], failed: tuple[str, ...] = (), costs: dict[int, dict] | None = None) -> str:
    """Study `name` in the store: trial number -> per-item errors (validation and test alike, or a
    (validation, test) pair; even numbers SmolLM2, odd Gemma), baseline name -> per-item errors,
    failed trials' reasons. Returns `name`."""
    tracker = MlflowTracker(uri, name)
    parent, _ = tracker.study_run(name, {"pricer.objective": "mae"})
    for number, errors in trials.items():
        model, variant = MODELS[number % 2]
        run = tracker.start_run(f"trial-{number}", parent_id=parent,
                                tags={ROLE: "trial", STUDY: name, TRIAL: str(number), STATE: "COMPLETE",
                                      "pricer.model": model, "pricer.variant": variant})
        val, test = errors if isinstance(errors, tuple) else (errors, errors)
        tracker.log_metrics(run, {"val_mae": score(TRUTH, _off_by(val)).mae, "test_mae": score(TRUTH, _off_by(test)).mae,
                                  **(costs or {}).get(number, {})})
        log_predictions(tracker, run, _off_by(val), _off_by(test))
        tracker.end_run(run)
    for i, reason in enumerate(failed, start=len(trials)):
        run = tracker.start_run(f"trial-{i}", parent_id=parent,
                                tags={ROLE: "trial", STUDY: name, TRIAL: str(i), STATE: "FAIL", REASON: reason,
                                      "pricer.model": "gemma-3-270m"})
        tracker.end_run(run, "FAILED")
    scored = []
    for baseline, errors in baselines.items():
        metrics = score(TRUTH, _off_by(errors))
        scored.append((baseline, metrics, metrics, {"validation": _off_by(errors), "test": _off_by(errors),
                                                    "truth": {"validation": TRUTH, "test": TRUTH}}, None))
    log_baselines(tracker, parent, scored)
    for run in tracker.runs("baseline"):  # what a baseline's timed test scoring logs
        tracker.log_metrics(run.info.run_id, {"test_seconds_per_1000": 2.0})
    return name


def _verdict(uri: str, name: str):
    from sweeps.results.verdict import StudyResults, verdict

    results = StudyResults(uri, name)
    return verdict(results), results


def test_a_baseline_that_beats_every_trial_is_the_winner_and_every_row_is_compared_with_it(store: str) -> None:
    from sweeps.results.report import render

    name = _study(store, "forest-wins", {0: [20.0] * 30, 1: [30.0] * 30},
                  {"random_forest": [5.0] * 30, "constant": [60.0] * 30})
    found, results = _verdict(store, name)
    assert found.winner.label == "random_forest (baseline)"
    assert found.best_trial.row.trial == 0 and found.best_trial is not found.winner
    assert found.headline() == ("The winner: random_forest (baseline), $5.00 on 30 test items. The best trial, "
                                "trial 0: smollm2-135m-instruct (instruct), is $20.00: every trial in the table "
                                "prices worse than the baseline.")
    compared = {e.label: e.versus for e in found.entries if e.versus is not None}
    assert compared["trial 0: smollm2-135m-instruct (instruct)"].difference == pytest.approx(15.0)
    assert compared["constant (baseline)"].difference == pytest.approx(55.0)
    assert all(v.b == "random_forest (baseline)" for v in compared.values())

    page = render(found, results, None)
    rows = page[page.index("<table id='verdict'>"):page.index("</table>")].split("<tr")
    assert "random_forest (baseline) (the winner)" in next(r for r in rows if "class='winner'" in r)
    assert sum("(the best trial)" in r for r in rows) == 1
    assert "<td>+$15.00</td>" in next(r for r in rows if "(the best trial)" in r)
    # the winner against the best trial by category and price band (the forest can't face itself)
    assert "Error by price band: the winner against trial 0: smollm2-135m-instruct (instruct)" in page


def test_the_best_trial_is_the_winner_when_it_beats_every_baseline(store: str) -> None:
    name = _study(store, "trial-wins", {0: [4.0] * 30, 1: [30.0] * 30}, {"random_forest": [5.0] * 30})
    found, _ = _verdict(store, name)
    assert found.winner is found.best_trial and found.winner.row.trial == 0
    assert found.headline().endswith("It is the best trial too.")
    forest = next(e for e in found.entries if e.group == "baseline")
    assert forest.versus.difference == pytest.approx(1.0) and forest.versus.told_apart


def test_a_trial_that_prices_the_test_items_better_than_the_best_trial_is_the_winner(store: str) -> None:
    """Trial 0 is best on validation (the best trial); trial 1, another model, prices the test
    items better than it and than the forest: the winner, with the best trial compared to it."""
    name = _study(store, "other-trial-wins", {0: ([4.0] * 30, [12.0] * 30), 1: ([8.0] * 30, [3.0] * 30)},
                  {"random_forest": [5.0] * 30})
    found, _ = _verdict(store, name)
    assert found.best_trial.row.trial == 0 and found.winner.row.trial == 1
    assert found.best_trial.versus.difference == pytest.approx(9.0)
    assert found.headline().endswith("is $12.00: chosen on the validation items, it prices the test items worse.")


def test_negative_dollars_read_minus_dollar() -> None:
    assert dollars(-3.22, signed=True) == "\u2212$3.22" and dollars(-3.22) == "\u2212$3.22"
    assert dollars(3.22, signed=True) == "+$3.22" and dollars(1234.5) == "$1,234.50"
    assert dollars(-0.001, signed=True) == "+$0.00"  # rounds to zero: no minus on nothing


# most items: A $1 better; three: A $100 worse. Wilcoxon sees the many, the mean the few.
FEW_LARGE = ([10.0] * 40 + [200.0] * 3, [11.0] * 40 + [100.0] * 3)
# the mean clearly apart through three huge items, the rest split evenly both ways
MEAN_ONLY = ([10.0] * 43, [10.5] * 20 + [9.5] * 20 + [100.0] * 3)


@pytest.mark.parametrize(("errors", "says"), [(FEW_LARGE, "most items lean one way (median \u2212$1.00"),
                                               (MEAN_ONLY, "a few large differences move the mean (\u2212$6.28")])
def test_where_the_interval_and_the_test_disagree_one_line_says_why(errors, says: str) -> None:
    paired = compare("A", errors[0], "B", errors[1])
    low, high = paired.difference_interval
    assert (paired.p_value < 0.05) != (high < 0 or low > 0)  # the premise: they disagree
    assert not paired.told_apart
    line = paired.disagreement()
    assert line.startswith("The interval and the Wilcoxon test disagree because the mean and the median of the "
                           "differences disagree") and says in line
    assert paired.sentence().endswith(line) and "not told apart on 43 items" in paired.sentence()
    assert "$-" not in paired.sentence()
    agreeing = compare("A", [10.0] * 43, "B", [20.0] * 43)
    assert agreeing.disagreement() == "" and agreeing.told_apart


def test_on_four_items_the_line_blames_the_count_not_the_median() -> None:
    """Four differences of one sign: the interval is clear of zero, Wilcoxon's p is 0.125 at best."""
    paired = compare("A", [100.0, 120.0, 90.0, 150.0], "B", [10.0, 20.0, 15.0, 30.0])
    assert paired.p_value == pytest.approx(0.125) and not paired.told_apart
    assert paired.disagreement() == ("The interval and the Wilcoxon test disagree because 4 items are too few for "
                                     "the test: its p can't go below 0.125 (mean difference +$96.25, median +$95.00)")


def test_the_page_says_why_a_row_is_not_told_apart_from_the_winner(store: str) -> None:
    from sweeps.results.report import render

    # the forest is $1 better on 28 items and $100 worse on 2: the trial wins on the mean, the
    # signed-rank test sees the forest ahead on most items, the interval spans zero
    forest, trial = [10.0] * 28 + [110.0] * 2, [11.0] * 28 + [10.0] * 2
    name = _study(store, "disagree", {0: trial}, {"random_forest": forest})
    found, results = _verdict(store, name)
    assert found.winner is found.best_trial
    page = render(found, results, None)
    sentences = page[page.index("<h2>In plain words</h2>"):page.index("<h2>Optimisation history")]
    versus = next(e.versus for e in found.entries if e.versus is not None)
    assert not versus.told_apart and versus.disagreement()
    assert "the mean and the median of the differences disagree" in sentences


def test_the_cost_plot_draws_what_each_contender_measured_and_names_what_it_did_not(store: str) -> None:
    from sweeps.results.costs import cost_figure

    name = _study(store, "costs", {0: [20.0] * 30, 1: [25.0] * 30}, {"random_forest": [5.0] * 30},
                  costs={0: {"test_seconds_per_1000": 900.0, "test_prompt_tokens_mean": 120.0, "peak_mem_gib": 1.5}})
    found, _ = _verdict(store, name)
    figure, note = cost_figure(found.entries)
    drawn = {trace.xaxis: [(x, t) for x, t in zip(trace.x, trace.text, strict=True)]
             for trace in figure.data if trace.name == "trials"}
    titles = [figure.layout[f"xaxis{i or ''}"].title.text for i in ("", 2, 3)]
    assert titles == ["seconds per 1,000 prices (on the machine it ran on)", "prompt tokens per 1,000 prices",
                      "peak memory (GiB)"]
    assert drawn["x2"] == [(120_000.0, "trial 0: smollm2-135m-instruct (instruct)")]
    assert "trial 1: gemma-3-270m (base): seconds per 1,000 prices, prompt tokens per 1,000 prices, peak memory" in note
    # the forest's seconds; it reads no prompt and logged no memory
    forest = [(trace.xaxis, list(trace.x)) for trace in figure.data if trace.name == "baselines" and len(trace.x)]
    assert forest == [("x", [2.0])]


def test_leaderboard_says_in_one_line_how_many_trials_failed_and_why(store: str, capsys) -> None:
    from sweeps.cli.main import main

    name = _study(store, "failures", {0: [20.0] * 30}, {"random_forest": [5.0] * 30},
                  failed=("loss is nan; lower the learning rate (now 0.5)", "trial_timeout of 600 s exceeded",
                          "loss is nan; lower the learning rate (now 0.3)"))
    capsys.readouterr()
    assert main(["leaderboard", name, "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "failed" in line]
    assert lines == ["3 of 4 trials failed: loss is nan (2), trial_timeout of 600 s exceeded (1)"]


def test_leaderboard_of_a_study_without_failures_says_nothing_about_them(store: str, capsys) -> None:
    from sweeps.cli.main import main

    name = _study(store, "no-failures", {0: [20.0] * 30}, {"random_forest": [5.0] * 30})
    capsys.readouterr()
    assert main(["leaderboard", name, "--tracking-uri", store]) == 0
    assert "failed" not in capsys.readouterr().out


def test_baselines_logged_by_two_workers_started_together_are_listed_once(store: str) -> None:
    """Both workers found no baselines and each logged a set: the leaderboard listed every baseline
    twice. The older set stays; the other worker deletes its own, and a reader in between sees one."""
    from sweeps.results.leaderboard import leaderboard

    name = _study(store, "two-workers", {0: [20.0] * 30}, {"random_forest": [5.0] * 30, "constant": [60.0] * 30})
    tracker = MlflowTracker(store, name, create=False)
    first = {r.info.run_id for r in tracker.runs("baseline")}
    parent = tracker.study_runs(name)[0]
    metrics = score(TRUTH, _off_by([7.0] * 30))
    late = log_baselines(tracker, parent, [("random_forest", metrics, metrics, None, None),
                                           ("constant", metrics, metrics, None, None)])
    assert len(tracker.runs("baseline")) == 4
    rows = [r for r in leaderboard(store, name) if r.trial is None]
    assert sorted(r.model for r in rows) == ["constant", "random_forest"]
    assert [r.test_mae for r in rows if r.model == "random_forest"] == [5.0]  # the older set's

    assert not tracker.keep_oldest_baselines(late)
    assert {r.info.run_id for r in tracker.runs("baseline")} == first
    assert tracker.keep_oldest_baselines(tracker.runs("baseline")[0].data.tags["pricer.baseline_set"])
