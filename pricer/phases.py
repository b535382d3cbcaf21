"""Where a run's seconds go: named phases, each with its wall time and its CPU time.

CPU time is what a loaded machine does not stretch (wall time on a shared 2-core box can double),
so each phase records both: user + system seconds of this process, and of the child processes it
waited for when ``children`` is true (a data build's workers). A trial process measures itself and
sends its own phases back (`pricer.train.loop.Result.phases`): a forkserver's children are not
this process's to wait for.

`phase(name)` records into the recorder `recording()` made active, and does nothing without one,
so library code marks its phases at no cost to a caller who is not profiling.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Phase:
    """One measured stretch (seconds)."""

    name: str
    wall_s: float
    cpu_s: float


def cpu_seconds(*, children: bool = True) -> float:
    """User + system CPU seconds of this process (and of the children it waited for)."""
    import resource

    who = [resource.RUSAGE_SELF] + ([resource.RUSAGE_CHILDREN] if children else [])
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, who))


@dataclass
class Phases:
    """The phases of one run, in the order they ended."""

    rows: list[Phase] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str, *, children: bool = True) -> Iterator[None]:
        wall, cpu = time.perf_counter(), cpu_seconds(children=children)
        try:
            yield
        finally:
            self.rows.append(Phase(name, time.perf_counter() - wall, cpu_seconds(children=children) - cpu))

    def add(self, rows: Sequence[Phase]) -> None:
        self.rows.extend(rows)

    def totals(self) -> list[tuple[str, int, float, float]]:
        """(name, times seen, wall s, CPU s) per name, in the order each name first ended."""
        out: dict[str, list] = {}
        for row in self.rows:
            entry = out.setdefault(row.name, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += row.wall_s
            entry[2] += row.cpu_s
        return [(name, n, wall, cpu) for name, (n, wall, cpu) in out.items()]


_ACTIVE: contextvars.ContextVar[Phases | None] = contextvars.ContextVar("pricer_phases", default=None)


@contextmanager
def recording(phases: Phases) -> Iterator[Phases]:
    """Make `phases` the recorder that `phase` writes to, inside this block."""
    token = _ACTIVE.set(phases)
    try:
        yield phases
    finally:
        _ACTIVE.reset(token)


@contextmanager
def phase(name: str, *, children: bool = True) -> Iterator[None]:
    """Time a block into the active recorder (nothing happens without one)."""
    active = _ACTIVE.get()
    if active is None:
        yield
        return
    with active.phase(name, children=children):
        yield


def record(rows: Sequence[Phase]) -> None:
    """Add phases measured elsewhere (a trial process's) to the active recorder, if any."""
    active = _ACTIVE.get()
    if active is not None:
        active.add(rows)
