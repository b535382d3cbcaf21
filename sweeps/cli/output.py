"""How the verbs print: JSON on one line, rich tables (names left, numbers right) on a console
wide enough for them."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
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
                console: Console | None = None, bold: Collection[int] = (),
                no_wrap_first: bool = False) -> Console:
    """Print a table whose first column names the rows (left-aligned) and whose other columns are
    numbers (right-aligned); returns the console, for the notes printed under it.

    Args:
        console: where to print (default: a plain `rich.console.Console`).
        bold: indices of rows to print in bold (e.g. the ensemble above its members).
        no_wrap_first: keep each row's name on one line.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # names come from the data and from MLflow tags: "[/x]" would crash the table, "[link=...]" fake a link
    table = Table(title=escape(title))
    for i, header in enumerate(headers):
        table.add_column(escape(header), justify="left" if i == 0 else "right", no_wrap=no_wrap_first and i == 0)
    for i, row in enumerate(rows):
        table.add_row(*(escape(str(cell)) for cell in row), style="bold" if i in bold else None)
    console = console or Console()
    console.print(table)
    return console
