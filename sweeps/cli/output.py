"""How the verbs print: JSON on one line, rich tables (names left, numbers right) on a console
wide enough for them."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from sweeps.results.leaderboard import Row


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=None, default=str))


def wide_console() -> Console:
    """A console for wide tables: piped or captured output is not squeezed into 80 columns."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=220)


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]], *,
                console: Console | None = None, styles: Mapping[int, str] | None = None,
                left: Collection[int] = (0,), no_wrap: Collection[int] = ()) -> Console:
    """Print a table whose first column names the rows (left-aligned) and whose other columns are
    numbers (right-aligned); returns the console, for the notes printed under it.

    Args:
        console: where to print (default: a plain `rich.console.Console`).
        styles: a rich style per row index (``{0: "bold"}``: the ensemble above its members).
        left: the columns (by index) of text, left-aligned.
        no_wrap: the columns whose cells stay on one line (e.g. the row names).
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    styles = styles or {}
    # names come from the data and from MLflow tags: "[/x]" would crash the table, "[link=...]" fake a link
    table = Table(title=escape(title) if title else None)
    for i, header in enumerate(headers):
        table.add_column(escape(header), justify="left" if i in left else "right", no_wrap=i in no_wrap)
    for i, row in enumerate(rows):
        table.add_row(*(escape(str(cell)) for cell in row), style=styles.get(i))
    console = console or Console()
    console.print(table)
    return console


def print_leaderboard(rows: Sequence[Row], title: str) -> None:
    """`sweeps.results.leaderboard` rows as a table: validation error with its 95 % interval, then
    the test split's scores (what a trial is worth on items nothing was tuned on)."""
    def fmt(value, spec: str) -> str:
        return "" if value is None else format(value, spec)

    def pct(value) -> str:
        return fmt(None if value is None else 100 * value, ".1f")

    cells, styles = [], {}
    for i, row in enumerate(rows):
        if row.baseline or row.rank == 1:
            styles[i] = "dim" if row.baseline else "bold"
        val = fmt(row.mae, ",.2f")
        if row.mae is not None and row.mae_low is not None:
            val += f" [{row.mae_low:,.0f}-{row.mae_high:,.0f}]"
        trial = "baseline" if row.baseline else fmt(row.trial, "d") + (" refit" if row.refit_of is not None else "")
        cells.append((fmt(row.rank, "d"), trial, f"{row.model} ({row.variant})" if row.variant else row.model,
                      fmt(row.lora_r, "d"), fmt(row.learning_rate, ".1e"), val, fmt(row.rmsle, ".3f"),
                      pct(row.hit_rate), fmt(row.test_mae, ",.2f"), fmt(row.test_rmsle, ".3f"),
                      pct(row.test_hit_rate), pct(row.test_coverage), fmt(row.test_interval_width, ".2f"),
                      row.state, fmt(row.minutes, ".1f")))
    headers = ("rank", "trial", "model", "r", "lr", "val $ error [95% CI]", "val RMSLE", "val hits %",
               "test $ error", "test RMSLE", "test hits %", "range cover %", "range width", "state", "min")
    print_table(title, headers, cells, console=wide_console(), styles=styles, left=(2, 13), no_wrap=(2, 5, 13))
