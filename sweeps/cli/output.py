"""How the verbs print: JSON on one line, rich tables (names left, numbers right) on a console
wide enough for them."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


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
    from rich.table import Table

    styles = styles or {}
    table = Table(title=title or None)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i in left else "right", no_wrap=i in no_wrap)
    for i, row in enumerate(rows):
        table.add_row(*row, style=styles.get(i))
    console = console or Console()
    console.print(table)
    return console
