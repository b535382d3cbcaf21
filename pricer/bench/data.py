"""`pricer bench data`: curation at the recipe's scale, one worker against all of them.

Writes N raw-schema Amazon 2023 lines made from a real curated file (each line a real product
with its title numbered and its price moved, so no two lines are duplicates; one in 20 unpriced), split over two
files, then builds them with 1 worker and with several, each in a fresh process, and reports
lines/s and the peak resident memory of the whole process tree (parent + workers, summed RSS
sampled every 50 ms: an upper bound, shared pages count once per process), also without its
shared pages.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import shutil
import tempfile
import time
from pathlib import Path

from pricer.errors import DataError
from pricer.machine import GIB, usable_cores

SAMPLE_EVERY_S = 0.05


def _raw_record(item: dict, n: int, rng: random.Random) -> dict:
    """A raw Amazon 2023 metadata record from a curated item: title numbered, price moved."""
    title, _, body = item["text"].partition("\n")
    half = len(body) // 2
    cut = body.rfind(" ", 0, half) if body.rfind(" ", 0, half) > 0 else half
    sentences = [s for s in body[cut:].split(". ") if s.strip()]
    try:
        details = json.loads(item.get("details") or "{}")
    except json.JSONDecodeError:
        details = {}
    price: object = round(min(max(item["price"] * rng.uniform(0.7, 1.3), 0.5), 999.0), 2)
    if n % 20 == 0:
        price = None  # the raw files hold many unpriced products
    elif n % 7 == 0:
        price = f"${price:,.2f}"
    category = item["category"].replace("_and_", " & ").replace("_", " ")
    # short words: scrub drops a word of 7+ characters with a digit, so "#1234567" would leave
    # copies of one text that de-duplication then drops
    batch, number = divmod(n, 1000)
    return {"main_category": category, "title": f"{item['title']} (lot {batch} no {number})", "average_rating": 4.2,
            "features": sentences[:6], "description": [body[:cut]], "price": price,
            "details": details if isinstance(details, dict) else {}, "store": "bench"}


def write_raw_lines(sample: str | Path, lines: int, folder: Path, files: int = 2, seed: int = 0) -> list[Path]:
    """`lines` raw-schema lines over `files` files in `folder` (reused when already written).

    Raises:
        DataError: the sample is missing or holds no item.
    """
    paths = [Path(folder) / f"raw-{lines}-{k}.jsonl" for k in range(files)]
    done = Path(folder) / f"raw-{lines}.done"
    if done.is_file() and all(p.is_file() for p in paths):
        return paths
    sample = Path(sample)
    if not sample.is_file():
        raise DataError(f"{sample}: no such file; pass --sample ITEMS.jsonl (curated items, e.g. the shared sample)")
    items = [json.loads(line) for line in sample.read_text().splitlines() if line.strip()]
    if not items:
        raise DataError(f"{sample}: no items")
    Path(folder).mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    per_file = -(-lines // files)
    n = 0
    for path in paths:
        with open(path, "w") as out:
            for _ in range(min(per_file, lines - n)):
                out.write(json.dumps(_raw_record(items[n % len(items)], n, rng)) + "\n")
                n += 1
    done.write_text(str(lines))
    return paths


def _build_once(paths: list[str], out: str, workers: int, result: multiprocessing.Queue) -> None:
    import resource

    from pricer.data.dataset import build

    report = build(paths, Path(out), workers=workers, progress=False)
    own, workers_ = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the whole tree (the pool's workers are reaped by now): what a busy machine
    # can't inflate the way it inflates wall time
    cpu = own.ru_utime + own.ru_stime + workers_.ru_utime + workers_.ru_stime
    result.put({"lines": report.lines, "kept": report.kept, "seconds": report.seconds, "cpu_seconds": cpu})


def _tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, RSS less shared pages) of a process and its descendants; the second leaves out
    file-backed pages such as a memory-mapped Arrow file being copied (reclaimable, the size of
    the data set), which is what the records themselves would cost."""
    import psutil

    rss = anonymous = 0
    try:
        processes = [psutil.Process(pid)]
        processes += processes[0].children(recursive=True)
    except psutil.Error:
        return 0, 0
    for process in processes:
        try:
            memory = process.memory_info()
        except psutil.Error:
            continue
        rss += memory.rss
        anonymous += memory.rss - getattr(memory, "shared", 0)
    return rss, anonymous


def measure_build(paths: list[Path], out: Path, workers: int) -> dict:
    """One build in a fresh process: wall seconds, lines/s and the process tree's peak RSS."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    started = time.perf_counter()
    process = context.Process(target=_build_once, args=([str(p) for p in paths], str(out), workers, queue))
    process.start()
    peak = peak_anonymous = 0
    while process.is_alive():
        rss, anonymous = _tree_memory(process.pid)
        peak, peak_anonymous = max(peak, rss), max(peak_anonymous, anonymous)
        if not queue.empty():
            break
        time.sleep(SAMPLE_EVERY_S)
    process.join()
    wall = time.perf_counter() - started
    if process.exitcode != 0 or queue.empty():
        raise DataError(f"bench data: the build with {workers} worker(s) failed (exit code {process.exitcode})")
    result = queue.get()
    return {"workers": workers, "seconds": round(wall, 2), "build_seconds": result["seconds"],
            "lines": result["lines"], "kept": result["kept"], "lines_per_s": round(result["lines"] / wall, 1),
            "cpu_seconds": round(result["cpu_seconds"], 1),
            "lines_per_cpu_s": round(result["lines"] / max(result["cpu_seconds"], 1e-9), 1),
            "peak_rss_gib": round(peak / GIB, 3), "peak_anonymous_gib": round(peak_anonymous / GIB, 3)}


def bench_data(sample: str | Path, lines: int, *, workers: tuple[int, ...] | None = None,
               folder: Path | None = None) -> dict:
    """Write `lines` raw lines over two files, build them once per worker count, compare.

    Args:
        workers: the worker counts to run (default: 1 and the machine's cores); ratios are each
            run against the first.
        folder: where the raw lines and builds go (default: a temporary folder, removed after);
            a folder that already holds the lines reuses them.
    """
    if lines < 1:
        raise DataError(f"--lines must be >= 1 (got {lines})")
    workers = workers or tuple(dict.fromkeys((1, usable_cores())))
    own = folder is None
    folder = Path(tempfile.mkdtemp(prefix="pricer-bench-data-")) if own else Path(folder)
    try:
        started = time.perf_counter()
        paths = write_raw_lines(sample, lines, folder)
        written = time.perf_counter() - started
        runs = []
        for w in workers:
            out = folder / f"built-{w}"
            shutil.rmtree(out, ignore_errors=True)
            runs.append(measure_build(paths, out, w))
            shutil.rmtree(out, ignore_errors=True)
        first = runs[0]
        for run in runs:
            run["speed_vs_first"] = round(run["lines_per_s"] / first["lines_per_s"], 2)
            run["memory_vs_first"] = round(run["peak_rss_gib"] / first["peak_rss_gib"], 2) if first["peak_rss_gib"] else None
        return {"lines": lines, "files": [str(p) for p in paths], "bytes": sum(p.stat().st_size for p in paths),
                "write_seconds": round(written, 1), "cores": usable_cores(), "runs": runs}
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
