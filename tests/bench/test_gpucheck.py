"""`make gpu-check`: it refuses in one line where there is no GPU, and its code path (the bench of
every shape, one trial step, one JSON table) runs on the toy models of the same families."""

from __future__ import annotations

import json

import pytest

from pricer.bench.gpucheck import SHAPE_NAMES, TOY_OF
from pricer.bench.speed import JSON_KEYS


def test_gpu_check_without_a_gpu_refuses_in_one_line(capsys, tmp_path) -> None:
    import torch

    from sweeps.cli.main import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the check would run, not refuse")
    out = tmp_path / "gpu-check.json"
    assert main(["gpu-check", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA device" in err and "--toy" in err
    assert not out.exists()


@pytest.mark.slow
def test_gpu_check_on_the_toys_writes_one_table_of_every_shape_and_a_trial_step(capsys, tmp_path,
                                                                                sample_path) -> None:
    from sweeps.cli.main import main

    out = tmp_path / "gpu-check.json"
    argv = ["gpu-check", "--toy", "--steps", "2", "--batch-size", "2", "--max-tokens", "80", "--eval-items", "2",
            "--data", str(sample_path), "--out", str(out)]
    assert main(argv) == 0

    table = json.loads(out.read_text())
    assert set(table) == {"device", "versions", "toy", "settings", "shapes", "trial", "total_s"}
    assert table["toy"] and table["settings"]["steps"] == 2 and table["settings"]["trial_items"] == 2
    assert table["total_s"] > 0  # null while the check runs
    assert list(table["shapes"]) == list(SHAPE_NAMES)
    timed = [k for k in JSON_KEYS if not k.startswith("load_s")]  # a GPU quantizes as it loads: not timed
    for name, row in table["shapes"].items():
        assert row["model"] == TOY_OF[name]
        assert set(row) == {*timed, "model", "ratios", "plan", "seconds", "checkpoint_s"}
        assert all(row[k] > 0 for k in timed if not k.startswith("mae")), (name, row)
        assert set(row["ratios"]) == {"train_tokens_per_s", "eval_items_per_s", "peak_mem_gib"}
    trial = table["trial"]
    assert trial["model"] == TOY_OF[SHAPE_NAMES[0]] and trial["config"]["max_steps"] == 1
    assert trial["train_tokens_per_s"] > 0 and trial["wall_s"] > 0 and trial["val_mae"] is not None
    assert "gpu-check on cpu" in capsys.readouterr().out or table["device"] != "cpu"
