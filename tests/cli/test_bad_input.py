"""Bad input through the CLI: exit code 2, one error line naming the place and the fix, and nothing
created or changed (no Optuna storage, no MLflow store, no data folder). No trial ever starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweeps.cli.main import main

STUDY = """\
name: bad-input
workdir: {workdir}
data: {{source: {source}, limit: 200}}
search_space:
  model: {{choices: [{model}]}}
  {param}: {{choices: [4]}}
fixed: {{max_steps: 1, batch_size: 2, max_tokens: 64, eval_items: 4, test_items: 4}}
n_trials: 1
"""
GOOD_ITEM = {"title": "Blue kettle", "category": "Appliances", "price": 24.99,
             "text": "Blue kettle\nA 1.7 litre electric kettle.", "details": "{}"}


def _study(tmp_path: Path, source: Path | str, *, model: str = "smollm2-135m-instruct",
           param: str = "lora_r") -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(workdir=tmp_path / "runs", source=source, model=model, param=param))
    return path


def _fails_cleanly(capsys, tmp_path: Path, argv: list[str], *expected: str) -> str:
    """Run the CLI; assert exit 2, one stderr line holding every expected piece, nothing created."""
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    # progress bars may share stderr; the error itself is one line
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("pricer: error: "), errors
    err = errors[0]
    for piece in expected:
        assert piece in err, f"{piece!r} not in {err!r}"
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, f"created: {set(after) - set(before)}"
    return err


def test_malformed_yaml_names_the_file_and_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("name: broken\nsearch_space: {model: [unclosed\n")
    _fails_cleanly(capsys, tmp_path, ["launch", str(path)], "study.yaml", "line")


def test_unknown_models_name_the_field_and_the_catalog_once(tmp_path: Path, sample_path: Path, capsys) -> None:
    path = _study(tmp_path, sample_path, model="no-such-model, other-model")
    err = _fails_cleanly(capsys, tmp_path, ["launch", str(path)], "study.yaml: search_space.model: unknown models",
                         "'no-such-model', 'other-model'", "smollm2-135m-instruct")
    assert err.count("smollm2-135m-instruct") == 1 and len(err) - len(str(path)) < 300, err


def test_misspelt_model_gets_the_closest_catalog_name(tmp_path: Path, sample_path: Path, capsys) -> None:
    path = _study(tmp_path, sample_path, model="smollm2-135m-instrct")
    err = _fails_cleanly(capsys, tmp_path, ["launch", str(path)], "did you mean 'smollm2-135m-instruct'?")
    assert "gemma" not in err


def test_missing_data_source_is_named_when_its_fallback_fails_too(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "shared" / "items.jsonl"
    path = _study(tmp_path, f"{missing}, fallback: 'memory://pricer-tests/no-such/items.jsonl'")
    _fails_cleanly(capsys, tmp_path, ["launch", str(path)], f"data.source {missing}: no such file",
                   "fallback failed: memory://pricer-tests/no-such/items.jsonl")


@pytest.mark.parametrize("value", ["abc", "0", "2.5"])
def test_bad_heartbeat_setting_is_one_line(tmp_path: Path, sample_path: Path, capsys,
                                           monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PRICER_HEARTBEAT_S", value)
    path = _study(tmp_path, sample_path)
    _fails_cleanly(capsys, tmp_path, ["launch", str(path)], f"PRICER_HEARTBEAT_S={value!r}", "whole number")


def test_unknown_parameter_lists_the_known_ones(tmp_path: Path, sample_path: Path, capsys) -> None:
    path = _study(tmp_path, sample_path, param="lora_rank")
    _fails_cleanly(capsys, tmp_path, ["launch", str(path)], "study.yaml", "lora_rank", "lora_r")


def test_empty_data_file_is_named(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    path = _study(tmp_path, empty)
    _fails_cleanly(capsys, tmp_path, ["launch", str(path)], "empty.jsonl")


def test_non_numeric_prices_only_are_a_data_error(tmp_path: Path, capsys) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({**GOOD_ITEM, "title": f"Kettle {i}", "price": "cheap"}) + "\n"
                             for i in range(20)))
    _fails_cleanly(capsys, tmp_path, ["data", "build", "--source", str(items), "--out", str(tmp_path / "out")],
                   "items.jsonl")


def test_corrupt_lines_are_counted_not_fatal(tmp_path: Path, sample_path: Path, capsys) -> None:
    good = sample_path.read_text().splitlines()[:60]
    corrupt = ["{not json", "", json.dumps({**GOOD_ITEM, "price": "n/a"}), "[1, 2]"]
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(good[:30] + corrupt + good[30:]) + "\n")
    out = tmp_path / "out"
    assert main(["data", "build", "--source", str(items), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (out / "dataset_dict.json").is_file()
    assert "dropped:" in printed and "dropped: none" not in printed


@pytest.mark.parametrize(("flag", "url"), [("--storage", "postgresql://postgres@127.0.0.1:1/x"),
                                           ("--tracking-uri", "http://127.0.0.1:1")])
def test_unreachable_store_is_named_and_nothing_is_created(tmp_path: Path, sample_path: Path, capsys,
                                                           flag: str, url: str) -> None:
    path = _study(tmp_path, sample_path)
    _fails_cleanly(capsys, tmp_path, ["launch", str(path), flag, url], url)


def test_a_bad_override_flag_is_one_line(tmp_path: Path, sample_path: Path, capsys) -> None:
    path = _study(tmp_path, sample_path)
    _fails_cleanly(capsys, tmp_path, ["launch", str(path), "--n-trials", "0"], "study.yaml with command-line flags",
                   "n_trials: must be >= 1 (got 0)")
