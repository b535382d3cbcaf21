"""`pricer demo`'s output: library chatter goes to the run's log file, the user's lines to the
terminal; the phase table's arithmetic."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pricer.phases import Phase, Phases, phase, record, recording

SCRIPT = textwrap.dedent('''
    import logging, multiprocessing, sys, warnings
    from pathlib import Path

    from sweeps.cli.demo import chatter_to


    def trial_process():
        # what bitsandbytes does in a trial process, where nothing configured logging
        logging.getLogger("bitsandbytes.backends.cpu.ops").warning("Failed to load CPU gemm_4bit_forward")


    if __name__ == "__main__":
        import mlflow  # noqa: F401 -- installs MLflow's own stderr handler, as in a real run
        import optuna
        from tqdm import tqdm

        with chatter_to(Path(sys.argv[1])):
            logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
            optuna.logging.get_logger("optuna").info("A new study created in RDB")
            warnings.warn("a library's deprecation", FutureWarning)
            for _ in tqdm(range(3), desc="Saving the dataset"):
                pass
            proc = multiprocessing.get_context("spawn").Process(target=trial_process)
            proc.start()
            proc.join()
            print("trial 1/4 done", flush=True)
        print("error: a line the user must see", file=sys.stderr)
''')


@pytest.mark.slow  # imports MLflow and Optuna in a fresh interpreter
def test_library_chatter_goes_to_the_log_and_the_user_sees_only_their_lines(tmp_path: Path) -> None:
    script, log = tmp_path / "demo_like.py", tmp_path / "run" / "demo.log"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(log)], capture_output=True, text=True,
                          timeout=120,
                          cwd=next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file()))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "trial 1/4 done\n"
    assert done.stderr == "error: a line the user must see\n"  # the terminal's stderr is back afterwards
    chatter = log.read_text()
    for line in ("Creating initial MLflow database tables", "A new study created in RDB",
                 "a library's deprecation", "Saving the dataset", "Failed to load CPU gemm_4bit_forward"):
        assert line in chatter


def test_phases_recorded_only_inside_a_recording_and_summed_by_name() -> None:
    with phase("nobody listens"):
        pass
    phases = Phases()
    with recording(phases):
        for _ in range(3):
            with phase("step"):
                sum(range(200_000))
        record([Phase("trial process start", 2.0, 1.5)])
    with phase("after"):
        pass
    totals = {name: (n, wall, cpu) for name, n, wall, cpu in phases.totals()}
    assert set(totals) == {"step", "trial process start"}
    assert totals["step"][0] == 3 and totals["step"][1] > 0
    assert totals["trial process start"] == (1, 2.0, 1.5)


@pytest.mark.slow
def test_a_trial_reports_where_its_seconds_went(tiny_trial) -> None:
    result, _ = tiny_trial
    totals = {name: (n, wall, cpu) for name, n, wall, cpu in Phases(result.phases).totals()}
    # a phase per step, per validation (every eval_every steps, the last at the end) and one test pass
    config = result.config
    assert totals["train steps"][0] == result.steps == config.max_steps
    assert totals["validation"][0] == config.max_steps // config.eval_every and totals["test"][0] == 1
    assert {"load model", "save adapter"} <= set(totals)
    assert all(wall > 0 and cpu >= 0 for _, wall, cpu in totals.values())
    # the phases happen inside the trial's own clock
    assert sum(wall for _, wall, _ in totals.values()) <= result.wall_s


def test_the_phase_table_prints_every_phase_and_writes_the_same_numbers(tmp_path: Path, capsys) -> None:
    import json

    from sweeps.cli.demo import print_phases

    rows = [("data build", 1, 4.0, 3.5), ("train steps", 2, 30.0, 55.0)]
    out = tmp_path / "demo-phases.json"
    print_phases(rows, wall=40.0, cpu=60.0, out=out, start_method="forkserver")
    printed = capsys.readouterr().out
    assert "data build" in printed and "train steps" in printed and "forkserver" in printed
    written = json.loads(out.read_text())
    assert written["wall_s"] == 40.0 and [p["cpu_s"] for p in written["phases"]] == [3.5, 55.0]
