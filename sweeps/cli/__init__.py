"""The verbs: parse, call one library function, print (tables, JSON, errors as one line).

May import every room of `sweeps` and `pricer`; nothing imports it.
"""

from sweeps.cli.main import main

__all__ = ["main"]
