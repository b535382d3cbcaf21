"""`pricer bench neighbors`: a real index of generated products built and queried in a fresh
process, with the reference timed on the same queries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PRICER = Path(sys.executable).with_name("pricer")


def test_the_bench_builds_and_queries_an_index_of_generated_items() -> None:
    out = subprocess.run([str(PRICER), "bench", "neighbors", "--items", "3000", "--queries", "40", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    assert r["items"] == 3000 and r["queries"] == 40 and r["reference_queries"] == 40
    assert r["nonzeros"] > 3000 * 20  # every product has words and word pairs in its row
    assert r["peak_rss_gib_query"] < 2  # 3,000 items: the index and its queries are small
    assert r["queries_per_s"] > 0 and r["reference_queries_per_s"] > 0 and r["speedup_vs_reference"] > 0


def test_a_bench_of_no_items_is_one_error_line() -> None:
    out = subprocess.run([str(PRICER), "bench", "neighbors", "--items", "0"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0
    assert "--items" in out.stderr and "Traceback" not in out.stderr
