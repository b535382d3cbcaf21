"""Searching on a fraction of the train split: the subset is nested and seeded, and the study
file's fidelity and refit sections are checked where they are written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pricer.data.fraction import fraction_indices, train_subset
from pricer.errors import SpecError
from sweeps.spec.space import to_config
from sweeps.spec.study import load_study

STUDY = """\
name: frac
data: {{source: items.jsonl}}
search_space:
  model: {{choices: [smollm2-135m-instruct, gemma-3-270m]}}
  learning_rate: {{low: 1e-4, high: 1e-3, log: true}}
fixed: {{max_steps: 3, max_tokens: 64}}
n_trials: 3
{extra}
"""


def _study(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "frac.yaml"
    path.write_text(STUDY.format(extra=extra))
    return path


def test_smaller_fractions_are_inside_larger_ones_and_the_same_every_time(built_data: Path) -> None:
    from pricer.data.dataset import as_items, load_splits

    items = as_items(load_splits(built_data)["train"])
    texts = [i.text for i in items]
    tenth, quarter, half = (set(fraction_indices(texts, f, seed=0)) for f in (0.1, 0.25, 0.5))
    assert tenth < quarter < half
    assert len(tenth) == -(-len(items) // 10)
    assert fraction_indices(texts, 0.1, seed=0) == sorted(tenth)  # deterministic, in split order
    assert set(fraction_indices(texts, 0.1, seed=1)) != tenth  # another seed, another subset
    # the subset follows the items, not their positions: shuffled input keeps the same items
    subset = {i.text for i in train_subset(items, 0.1)}
    assert {i.text for i in train_subset(list(reversed(items)), 0.1)} == subset
    assert train_subset(items, 1.0) == items
    # the subset is spread over prices like the whole (not, say, the cheapest tenth)
    median = sorted(i.price for i in items)[len(items) // 2]
    cheap = sum(items[i].price < median for i in tenth) / len(tenth)
    assert 0.35 < cheap < 0.65


def test_fidelity_reaches_every_trial_config_and_refit_overrides_parse(tmp_path: Path) -> None:
    spec = load_study(_study(tmp_path, "fidelity: {train_fraction: 0.1, seed: 3}\n"
                                       "refit: {top_k: 2, train_fraction: 1.0, max_steps: 6}"))
    config = to_config(spec, {"model": "gemma-3-270m", "learning_rate": 1e-4})
    assert (config.train_fraction, config.fraction_seed) == (0.1, 3)
    assert (spec.refit.top_k, spec.refit.train_fraction, spec.refit.overrides) == (2, 1.0, {"max_steps": 6})
    plain = load_study(_study(tmp_path, ""))
    assert to_config(plain, {"model": "gemma-3-270m", "learning_rate": 1e-4}).train_fraction == 1.0
    assert plain.refit is None


@pytest.mark.parametrize(("extra", "message"), [
    ("fidelity: {train_fraction: 0}", "fidelity.train_fraction: must be > 0.0 (got 0)"),
    ("fidelity: {train_fraction: 1.5}", "fidelity.train_fraction: must be <= 1.0 (got 1.5)"),
    ("refit: {top_k: 2, train_fraction: -0.1}", "refit.train_fraction: must be > 0.0 (got -0.1)"),
    ("refit: {top_k: 0}", "refit.top_k: must be >= 1 (got 0)"),
    ("refit: {top_k: 4}", "refit.top_k: 4 is more than n_trials (3)"),
    ("refit: {top_k: 1, learning_rate: 1e-3}", "refit.learning_rate: is searched"),
    ("refit: {top_k: 1, max_stepz: 3}", "refit.max_stepz: neither top_k, train_fraction nor a training parameter"),
])
def test_bad_fraction_or_refit_is_one_error_naming_the_field(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_study(_study(tmp_path, extra))
    assert message in str(caught.value) and str(caught.value).startswith(str(tmp_path / "frac.yaml"))


def test_train_config_rejects_a_fraction_outside_zero_one() -> None:
    from pricer.train.config import TrainConfig

    with pytest.raises(SpecError, match=r"train_fraction: must be > 0.0 \(got 0.0\)"):
        TrainConfig(train_fraction=0.0)


def test_fidelity_bench_summary_correlates_and_measures_regret() -> None:
    from sweeps.bench.fidelity import FidelityRun, summarise

    full = [10.0, 20.0, 30.0, 40.0]
    tenth = [22.0, 12.0, 31.0, 45.0]  # ranks configs 0 and 1 the wrong way round
    runs = [FidelityRun(i, "m", f, 10, 1, 0.0, e, 1.0, s) for f, errors, s in ((0.1, tenth, 1.0), (1.0, full, 10.0))
            for i, e in enumerate(errors)]
    summary = summarise(runs, [0.1, 1.0], [{}] * 4)
    at_tenth, at_full = summary["fractions"]
    assert at_full["across_models"]["spearman"] == pytest.approx(1.0) and at_full["across_models"]["regret"] == 0
    assert at_tenth["across_models"]["spearman"] == pytest.approx(0.8)
    assert at_tenth["across_models"]["winner"] == 1 and at_tenth["across_models"]["regret"] == pytest.approx(10.0)
    assert at_tenth["within_model"]["m"]["spearman"] == pytest.approx(0.8)
    assert at_tenth["train_s_vs_full"] == pytest.approx(0.1)


def test_fidelity_bench_draws_the_default_first_and_needs_the_full_fraction() -> None:
    from sweeps.bench.fidelity import draw_configs, parse_fractions

    spec = load_study(Path(__file__).resolve().parents[1] / "studies/cpu-search.yaml")
    configs = draw_configs(spec, 4, seed=0)
    assert configs[0] == spec.enqueue[0] and len({repr(c) for c in configs}) == 4
    assert configs == draw_configs(spec, 4, seed=0)
    assert parse_fractions("1.0,0.1,0.25") == [0.1, 0.25, 1.0]
    with pytest.raises(SpecError, match="include 1.0"):
        parse_fractions("0.1,0.25")
    with pytest.raises(SpecError, match=r"--fractions: must be a number in \(0, 1\] \(got 0.0\)"):
        parse_fractions("0,1")
