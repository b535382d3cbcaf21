"""What each contender's test $ error costs: seconds, prompt tokens and peak memory per 1,000
prices, from the metrics its MLflow run logged on the test split.

A trial logs ``test_seconds_per_1000`` and ``test_prompt_tokens_mean`` from its test pass; a
classical baseline logs its seconds (it reads no prompt). Memory is the run's
``test_peak_rss_gib`` where the run logged one, else its ``peak_mem_gib`` (a trial's peak over
training and scoring: an upper bound for pricing alone). A contender without a cost is left out
of that cost's panel, and the panel's note names it, rather than drawn at zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sweeps.results.verdict import Entry


@dataclass(frozen=True)
class Cost:
    """One x axis: its title and how to read it from a run's metrics (None: not measured)."""

    title: str
    read: Callable[[dict], float | None]


def _seconds(metrics: dict) -> float | None:
    return metrics.get("test_seconds_per_1000")


def _prompt_tokens(metrics: dict) -> float | None:
    mean = metrics.get("test_prompt_tokens_mean")
    return None if mean is None else 1000 * mean


def _memory(metrics: dict) -> float | None:
    peak = metrics.get("test_peak_rss_gib")
    return peak if peak is not None else metrics.get("peak_mem_gib")


COSTS = (Cost("seconds per 1,000 prices (on the machine it ran on)", _seconds),
         Cost("prompt tokens per 1,000 prices", _prompt_tokens),
         Cost("peak memory (GiB)", _memory))


def costs_of(entry: Entry) -> dict[str, float]:
    """Cost title -> value for the costs `entry`'s run measured."""
    out = {}
    for cost in COSTS:
        value = cost.read(entry.metrics)
        if value is not None:
            out[cost.title] = value
    return out


def cost_figure(entries: Sequence[Entry]):
    """(plotly figure or None, note): one panel per cost at least one contender measured, test
    $ error on the shared y axis, one labelled point per contender (each run once)."""
    from plotly.subplots import make_subplots

    first: dict[str, Entry] = {}
    for e in entries:
        first.setdefault(e.row.run_id, e)  # a run that is its model's and its family's best: once
    unique = list(first.values())
    measured = {e.row.run_id: costs_of(e) for e in unique}
    panels = [c.title for c in COSTS if any(c.title in m for m in measured.values())]
    if not panels:
        return None, "no contender logged a cost (runs from before costs were measured)"
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.06)
    for group, symbol in (("trial", "circle"), ("baseline", "square")):
        members = [e for e in unique if (e.group == "baseline") == (group == "baseline")]
        for col, title in enumerate(panels, start=1):
            shown = [e for e in members if title in measured[e.row.run_id]]
            fig.add_scatter(x=[measured[e.row.run_id][title] for e in shown], y=[e.mae for e in shown],
                            mode="markers+text", text=[e.label for e in shown], textposition="top center",
                            hovertext=[f"{e.label}<br>host {e.host or '?'}" for e in shown],
                            marker={"size": 10, "symbol": symbol}, name=f"{group}s", legendgroup=group,
                            showlegend=col == 1 and bool(shown), row=1, col=col)
            fig.update_xaxes(title_text=title, row=1, col=col)
    fig.update_yaxes(title_text="test $ error", row=1, col=1)
    fig.update_layout(height=420)
    missing = [f"{e.label}: {', '.join(t.split(' (')[0] for t in panels if t not in measured[e.row.run_id])}"
               for e in unique if any(t not in measured[e.row.run_id] for t in panels)]
    note = "lower left is better"
    if missing:
        note += ". Not measured (a baseline reads no prompt), so not drawn: " + "; ".join(missing)
    return fig, note
