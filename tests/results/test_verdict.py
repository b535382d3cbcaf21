"""The verdict on a launched study (the session `sweep` fixture, conftest.py): price ranges logged
per trial, `pricer compare` and `pricer report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeps.results.leaderboard import leaderboard
from sweeps.run.studies import open_study
from sweeps.track.tracking import MlflowTracker


def _test_rows(sweep, trial: int) -> list[dict]:
    """A trial's test predictions, read straight from its predictions.csv."""
    import csv

    run_id = open_study(sweep.spec).trials[trial].user_attrs["mlflow_run_id"]
    path = sweep.tracker.client.download_artifacts(run_id, "predictions.csv", str(sweep.root / f"csv-{trial}"))
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _test_errors(sweep, trial: int) -> list[float]:
    return [abs(float(r["predicted"] or 0) - float(r["price"])) for r in _test_rows(sweep, trial)]


@pytest.mark.slow
def test_every_finished_trial_logs_its_price_ranges_coverage_and_width(sweep) -> None:
    rows = [r for r in leaderboard(sweep.spec.tracking_uri, sweep.spec.name) if not r.baseline and r.rank]
    for row in rows:
        metrics = sweep.tracker.client.get_run(row.run_id).data.metrics
        # the share of its test rows whose price lies inside the range written beside it
        covered = [r["price_low"] != "" and float(r["price_low"]) <= float(r["price"]) <= float(r["price_high"])
                   for r in _test_rows(sweep, row.trial)]
        assert row.test_coverage == pytest.approx(sum(covered) / len(covered)) and row.test_interval_width is not None
        # 4 validation items are too few to calibrate on: the factor stays 1, raw and final agree
        assert metrics["interval_scale"] == 1.0
        assert metrics["interval_test_coverage_raw"] == row.test_coverage


@pytest.mark.slow
def test_compare_pairs_two_trials_and_agrees_with_scipy(sweep, capsys) -> None:
    from scipy.stats import wilcoxon

    from sweeps.cli.main import main

    assert main(["compare", str(sweep.path), "0", "1", "--json"]) == 0
    paired = json.loads(capsys.readouterr().out)
    a, b = _test_errors(sweep, 0), _test_errors(sweep, 1)
    assert paired["n"] == 4
    assert paired["a_mae"] == pytest.approx(sum(a) / 4, abs=1e-6) and paired["b_mae"] == pytest.approx(sum(b) / 4, abs=1e-6)
    expected = 1.0 if a == b else wilcoxon(a, b).pvalue
    assert paired["p_value"] == pytest.approx(expected)
    low, high = paired["difference_interval"]
    assert low <= paired["difference"] <= high
    # Wilcoxon's smallest two-sided p on 4 pairs is 0.125: no two trials can be told apart on 4 items
    assert not paired["told_apart"] and paired["p_value"] >= 0.125
    assert paired["sentence"].startswith(f"{paired['a']} and {paired['b']} are not told apart on 4 items")

    assert main(["compare", str(sweep.path), "0", "random_forest"]) == 0
    assert "Wilcoxon" in capsys.readouterr().out
    assert main(["compare", str(sweep.path), "0", "17"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no trial, run id or baseline '17'" in err
    assert main(["compare", str(sweep.path), "0", "2"]) == 2  # the pruned trial
    assert "pruned, not finished" in capsys.readouterr().err


@pytest.mark.slow
def test_report_is_one_offline_page_logged_to_the_study_run_and_renders_in_chromium(sweep, tmp_path: Path,
                                                                                     capsys) -> None:
    import re
    import shutil
    import subprocess

    from sweeps.cli.main import main

    out = tmp_path / "report.html"
    assert main(["report", str(sweep.path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    page = out.read_text()
    assert "<table id='verdict'>" in page and "scatter-winner" in page
    # plotly.js inlined (3 MB+), no script fetched from anywhere: readable offline
    assert "<script charset=\"utf-8\" src=" not in page and len(page) > 3_000_000
    assert "random_forest (baseline)" in page and "Wilcoxon" in page
    # 4 test items tell nothing apart (Wilcoxon's smallest p on 4 pairs is 0.125)
    assert "not told apart on 4 items" in printed and " beats " not in printed
    assert "  The winner: " in printed
    parent = sweep.tracker.study_runs(sweep.spec.name)[0]
    assert {a.path for a in sweep.tracker.client.list_artifacts(parent, "report")} == {"report/report.html"}

    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`apt-get install -y chromium`)")
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                          "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert re.search(r"<table id=\"verdict\">.*\(the winner\)", dom, flags=re.S)
    # plotly drew the winner's scatter: its div holds the rendered SVG with the points
    scatter = dom[dom.index('id="scatter-winner"'):]
    assert 'class="main-svg"' in scatter[:20000] and "scatterlayer" in scatter[:200000]
    # the axes that number trials (0, 1, 2 here) show whole numbers only, each once
    for div in ("history", "by-trial"):
        plot = dom[dom.index(f'id="{div}"'):]
        plot = plot[:plot.index("</svg>", plot.index('class="main-svg"'))]
        ticks = re.findall(r'class="xtick".*?>([^<]*)</text>', plot)
        assert ticks and all(re.fullmatch(r"\d+", t) for t in ticks) and len(set(ticks)) == len(ticks), (div, ticks)
    # the cost plot drew the trials' peak memory at least (seconds and prompt tokens where the runs logged them)
    costs = dom[dom.index('id="costs"'):]
    assert 'class="main-svg"' in costs[:20000] and "peak memory (GiB)" in costs[:200000]


@pytest.mark.slow
def test_a_baseline_that_beats_every_trial_is_named_the_winner(sweep, tmp_path: Path) -> None:
    """Trials of 2 steps price far worse than a random forest: the page's winner is a baseline,
    every other row is compared with it (no row beats it), and the best trial is marked apart."""
    import re

    from sweeps.results.report import render
    from sweeps.results.verdict import StudyResults, verdict

    results = StudyResults(sweep.spec.tracking_uri, sweep.spec.name)
    found = verdict(results)
    trials = [e for e in found.entries if e.group != "baseline"]
    baselines = [e for e in found.entries if e.group == "baseline"]
    assert min(e.mae for e in baselines) < min(e.mae for e in trials), "the fixture's premise"
    assert found.winner.group == "baseline" and found.winner.mae == min(e.mae for e in found.entries)
    assert found.best_trial.row.trial == next(r for r in results.rows if not r.baseline and r.rank).trial
    for e in found.entries:
        assert (e.versus is None) == (e is found.winner)
        assert e.versus is None or (e.versus.difference >= 0 and e.versus.b == found.winner.label)
    assert found.headline().startswith(f"The winner: {found.winner.label}")
    assert "every trial in the table prices worse than the baseline" in found.headline()

    page = render(found, results, None)
    table = page[page.index("<table id='verdict'>"):page.index("</table>")]
    winner_row = next(r for r in table.split("<tr") if "(the winner)" in r)
    assert found.winner.label in winner_row and "baseline" in winner_row
    best_row = next(r for r in table.split("<tr") if "(the best trial)" in r)
    assert f"trial {found.best_trial.row.trial}:" in best_row
    # the table and the sentences, before the plots: a negative amount reads −$, never $-
    assert "$-" not in page[:page.index("<h2>Optimisation history")]
    differences = re.findall(r"<td>([+\u2212]\$[\d,.]+)</td>", table)  # "vs winner" cells (intervals are [..])
    assert differences and all(d.startswith("+") for d in differences)  # nothing beats the winner


def test_a_study_with_no_finished_trial_gets_one_line(tmp_path: Path, capsys) -> None:
    from sweeps.cli.main import main
    from sweeps.track.tracking import ROLE, STUDY

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "empty")
    tracker.start_run("empty", tags={ROLE: "study", STUDY: "empty"})
    capsys.readouterr()  # MLflow's own log lines from creating the store
    assert main(["report", "empty", "--tracking-uri", uri, "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finished trial" in err
