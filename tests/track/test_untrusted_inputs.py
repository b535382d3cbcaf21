"""Folders, files, texts and names from elsewhere give one clear line, never a traceback, a hang,
a price for nothing or a file outside the folder: an ensemble's members, a baseline file that
unpacks without end, empty product texts, data-source URLs, markup in names, an IPv6 UI host.
No fine-tune: the predictor is an ensemble of one real fitted baseline (`test_untrusted`'s)."""

from __future__ import annotations

import gzip
import io
import json
import pickle
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from pricer.errors import DataError, SpecError
from pricer.predict.ensemble import Member
from sweeps.cli.main import main

KETTLE = "Stainless steel kettle\\n1.7 litre, 1500 W, weight 2 pounds"


def _edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / "pricer.json").read_text())
    change(meta)
    (folder / "pricer.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("name", ["../../evil", "a/b", ".", "..", "", "x\\y", "/abs"])
def test_a_member_name_that_is_not_a_plain_name_is_refused(name: str) -> None:
    with pytest.raises(SpecError, match="not a plain name"):
        Member(name, "baseline", "members/x/model.pkl.gz", 1.0)


@pytest.mark.parametrize("path", [".", "./", "members/.."])
def test_a_member_that_is_the_ensemble_itself_is_one_line_not_a_recursion(ensemble_folder: Path,
                                                                          path: str, capsys) -> None:
    def point_at_itself(meta: dict) -> None:
        meta["members"][0].update(kind="adapter", path=path)

    _edit_meta(ensemble_folder, point_at_itself)
    assert main(["predict", "--adapter", str(ensemble_folder), KETTLE]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "member linear" in err[0] and ("itself" in err[0] or "leaves the folder" in err[0])


@pytest.mark.parametrize("weight", ["0.5", None, [1], True, float("nan"), -1])
def test_a_weight_that_is_not_a_number_is_one_line(ensemble_folder: Path, weight, capsys) -> None:
    _edit_meta(ensemble_folder, lambda meta: meta["members"][0].update(weight=weight))
    assert main(["predict", "--adapter", str(ensemble_folder), KETTLE]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"weight: must be (a|a finite) number|weight: must be >= 0", err[0]), err


@pytest.mark.parametrize(("kind", "drop"), [("adapter", "model"), ("adapter", "prompt"), ("merged", "model"),
                                            ("ensemble", "members")])
def test_a_pricer_json_missing_a_key_is_one_line_naming_it(ensemble_folder: Path, kind: str,
                                                           drop: str, capsys) -> None:
    from pricer.model.catalog import CATALOG

    def damage(meta: dict) -> None:
        if kind != "ensemble":
            meta.update(kind=kind, model=CATALOG["toy-llama-3.1"].to_dict(), prompt={"max_tokens": 32})
        del meta[drop]

    _edit_meta(ensemble_folder, damage)
    assert main(["predict", "--adapter", str(ensemble_folder), KETTLE]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pricer.json: no " + drop in err[0], err


def test_a_baseline_file_that_unpacks_without_end_is_refused_before_memory_runs_out(tmp_path: Path) -> None:
    from pricer.predict.baselinefile import load_baseline

    path = tmp_path / "model.pkl.gz"
    with gzip.open(path, "wb", compresslevel=9) as handle:
        # one pickled 400 MB bytes object: a ~400 KB file
        pickle.dump(bytes(400 << 20), handle, protocol=5)
    assert path.stat().st_size < 2 << 20
    with pytest.raises(SpecError, match="unpacks to more than"):
        load_baseline(path)


def test_empty_texts_get_no_price_and_every_input_line_its_output_line(ensemble_folder: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys) -> None:
    assert main(["predict", "--adapter", str(ensemble_folder), "", "   ", "!!!", KETTLE, "--json"]) == 0
    answers = json.loads(capsys.readouterr().out)
    assert [a["price"] is None for a in answers] == [True, True, True, False]
    assert [a["problem"] for a in answers][:3] == ["empty text"] * 3

    # stdin: a blank line in the middle keeps its place
    monkeypatch.setattr("sys.stdin", io.StringIO("Stainless steel kettle\n\nCordless drill 18 V\n   \n"))
    assert main(["predict", "--adapter", str(ensemble_folder)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 4 and lines[1] == "-" and lines[3] == "-" and lines[0] != "-" and lines[2] != "-"
    assert "text 2: no price (empty text)" in captured.err and "text 4: no price (empty text)" in captured.err


@pytest.mark.parametrize("url", ["file:///etc/passwd", "memory://x.jsonl", "ftp://example.com/x.jsonl",
                                 "http://example.com/x.jsonl", "s3://bucket/x.jsonl"])
def test_a_data_source_url_of_another_scheme_is_refused(url: str) -> None:
    from pricer.data.readers import iter_lines
    from pricer.data.sources import expand_all

    with pytest.raises(DataError, match=r"source is not read; use a local path, hf://, https://"):
        expand_all([url])
    with pytest.raises(DataError, match="source is not read"):
        next(iter_lines(url))


def test_a_line_without_end_is_skipped_in_pieces_and_counted(tmp_path: Path, sample_path: Path) -> None:
    from pricer.data.readers import MAX_LINE_CHARS, read_items

    good = sample_path.read_text().splitlines()[:2]
    path = tmp_path / "items.jsonl"
    with path.open("w") as out:
        out.write(good[0] + "\n")
        out.write("{" + "x" * (MAX_LINE_CHARS * 2) + "\n")
        out.write(good[1] + "\n")
        out.write("y" * (MAX_LINE_CHARS + 5))  # the last line, no newline at all
    drops: Counter = Counter()
    items = list(read_items(path, drops=drops))
    assert len(items) == 2 and drops["line_too_long"] == 2

    # the parallel build reads byte ranges: cut in the middle of the long line, each line once
    from pricer.data.readers import range_lines

    size, cut = path.stat().st_size, len(good[0]) + 1 + MAX_LINE_CHARS
    ranged: Counter = Counter()
    lines = [*range_lines(path, 0, cut, ranged), *range_lines(path, cut, size, ranged)]
    assert lines == good and ranged["line_too_long"] == 2


def test_a_slow_source_does_not_hold_the_build_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import threading

    from pricer.data import sources

    # a server that accepts and never answers
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    monkeypatch.setattr(sources, "INFO_TIMEOUT_S", 1.0)
    url = f"https://127.0.0.1:{server.getsockname()[1]}/items.jsonl"
    started = time.monotonic()
    key = sources.content_key([url], {})
    # not a speed check: without the time limit the look-up waits out aiohttp's 5 minutes
    assert len(key) == 16 and time.monotonic() - started < 60
    server.close()


@pytest.mark.parametrize("name", ["[/x]", "[link=https://evil.example]free[/link]", "[bold]shout"])
def test_names_with_markup_print_as_written(name: str) -> None:
    from rich.console import Console

    from sweeps.cli.output import print_table

    console = Console(file=io.StringIO(), width=200, color_system=None)
    print_table(f"study {name}", ("category", "n"), [(name, "3")], console=console)
    shown = console.file.getvalue()
    assert shown.count(name) == 2, shown


def test_the_ui_url_brackets_an_ipv6_host() -> None:
    from sweeps.results.ui import server_url

    assert server_url("::1", 5000) == "http://[::1]:5000"
    assert server_url("127.0.0.1", 5000) == "http://127.0.0.1:5000"
    assert server_url("localhost", 80) == "http://localhost:80"
