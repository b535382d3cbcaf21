"""What this process may use of the machine it runs on: its cores (a container's or a job's share,
not the machine's) and the memory it holds now."""

from __future__ import annotations

import os

GIB = 1024**3
# the thread pools torch (OpenMP, MKL), BLAS and the tokenizers (Rayon) size themselves by: each
# takes every core unless told, and two such processes on 2 cores ran 5-6x slower instead of 2x
THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, else all)."""
    if hasattr(os, "sched_getaffinity"):  # not on macOS
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def thread_budget() -> int:
    """The threads this process's compute may use: ``OMP_NUM_THREADS`` where set (a fleet gives each
    worker its share of the cores that way), else its usable cores."""
    try:
        return max(int(os.environ.get("OMP_NUM_THREADS", "")), 1)
    except ValueError:
        return usable_cores()


def rss_gib() -> float:
    """This process's resident memory now, in GiB."""
    import psutil

    return psutil.Process().memory_info().rss / GIB
