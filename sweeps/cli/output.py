"""How the verbs print: JSON on one line, rich tables on a console wide enough for them."""

from __future__ import annotations

import json


def print_json(obj: object) -> None:
    print(json.dumps(obj, indent=None, default=str))


def wide_console():
    """A console for wide tables: piped or captured output is not squeezed into 80 columns."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=170)
