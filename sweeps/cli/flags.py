"""How the verbs take flags: a parser whose help shows every flag's default, and a declared
model's fields (`TrainConfig`) as flags, so ``pricer train`` can't drift from the config."""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any, Literal

# flags spelt shorter than their field (the README and the tests use them)
RENAMED = {"learning_rate": "lr"}


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written (line breaks kept), each flag's help ending in its default; a flag
    without one (None, off) says in its help what unset means."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class _Verbs(argparse._SubParsersAction):
    """Sub-commands whose own ``--help`` opens with the line that lists them in their parent's."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if "help" in kwargs:
            kwargs.setdefault("description", kwargs["help"])
        return super().add_parser(name, **kwargs)


class Parser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with `HelpFormatter`; its sub-commands' parsers are Parsers too,
    and a sub-command's help line is also the description its own ``--help`` opens with.

    Args:
        later: adds flags whose making is slow (importing a declared model) when this parser is
            first used or its help shown, so ``pricer --help`` and the other verbs don't pay for it.
    """

    def __init__(self, *args: Any, later: Callable[[argparse.ArgumentParser], None] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Verbs)
        self._later = later

    def add_later_flags(self) -> None:
        if self._later is not None:
            later, self._later = self._later, None
            later(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self.add_later_flags()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.add_later_flags()
        return super().format_usage()

    def format_help(self) -> str:
        self.add_later_flags()
        return super().format_help()


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, skip: Collection[str] = (),
                     renamed: Mapping[str, str] = RENAMED) -> None:
    """One flag per field of the declared model `cls` (``--lora-r`` for ``lora_r``): its type,
    choices (a ``Literal``), default and help (the field's description)."""
    for name, info in cls.__pydantic_fields__.items():
        if name in skip:
            continue
        kind, choices = _flag_type(info.annotation)
        flag = "--" + renamed.get(name, name).replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=info.default,
                                help=info.description)
            continue
        parser.add_argument(flag, dest=name, type=kind, choices=choices, default=info.default,
                            metavar=None if choices else renamed.get(name, name).upper(), help=info.description)


def config_from_flags(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """`cls` from the flags `add_config_flags` added (and `values` for the fields it skipped).

    Raises:
        SpecError: a bad value, naming the field.
    """
    flags = {name: getattr(args, name) for name in cls.__pydantic_fields__ if hasattr(args, name)}
    return cls.from_dict({**flags, **values})


def _flag_type(annotation: Any) -> tuple[type, tuple | None]:
    """(argparse type, choices) for a field's annotation: ``int | None`` -> int, ``Literal`` -> str
    with its values as choices."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        values = typing.get_args(annotation)
        return type(values[0]), values
    return annotation, None


def add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON on one line instead of a table")


def add_tracking_uri_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="the MLflow store (unset: PRICER_TRACKING_URI, which keeps a password out of the "
                   "process list, else the study file's, else sqlite:///runs/<name>/mlflow.db)")


def add_columns_flags(p: argparse.ArgumentParser) -> None:
    """``--text-columns`` / ``--price-column``: which columns of a product table hold the text and price."""
    p.add_argument("--text-columns", default=None, metavar="A,B,...",
                   help="a product table's text columns, title first (unset: title,description,features,"
                        "details where present, or a curated text column)")
    p.add_argument("--price-column", default=None, metavar="NAME",
                   help="a product table's price column (unset: price)")


def columns_from_flags(args: argparse.Namespace):
    """The --text-columns / --price-column mapping, None when neither is given."""
    from pricer.data.tables import Columns

    if args.text_columns is None and args.price_column is None:
        return None
    return Columns.parse(args.text_columns, args.price_column)
