"""What every declared model shares (a study file's sections, `TrainConfig`, catalog entries):
their pydantic config, `validate` (a mapping -> the model, or one `SpecError`), `Problems` (what a
validator found, each at its own field), and `one_line`: the one place where pydantic's errors
become the house's message, ``<where>: <field.path>: <problem> (got <value>); ...``.

The models are pydantic dataclasses: checked by pydantic where they are made, and still
dataclasses, so `dataclasses.replace` (which checks again), `asdict` and `fields` work on them.
A field that the loader sets rather than the user (a search-space parameter's name, from its key)
is listed in the class's ``_set_by_loader`` and left out of "expected one of ..." hints.

A settings class a user fills in code or with flags (`pricer.data.sampling.Sampling`,
`pricer.bench.speed.BenchSettings`...) is made with `declared`: a bad value is then the same one
line, ``sampling: cap: must be >= 1 (got 0)``, wherever the class is made.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError, model_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_core import ArgsKwargs, InitErrorDetails, PydanticCustomError

from pricer.errors import SpecError

# A misspelt key is an error, never ignored. Aliases (a study file's `param:`, `type:`) and field
# names both validate, so `dataclasses.replace` can pass field names.
DECLARED = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)

T = TypeVar("T")
Loc = tuple[str | int, ...]


# True while an outer validation runs: a `declared` class made inside it leaves its problems to
# the outer one, so a study file's problems stay one line under the file's name.
_NESTED: ContextVar[bool] = ContextVar("pricer_declared_nested", default=False)


def validate(cls: type[T], data: object, where: str, context: Mapping | None = None) -> T:
    """`cls` from a mapping (a study file's section, flags, a ``pricer.json`` entry); `context`
    reaches the validators (``info.context``).

    Raises:
        SpecError: every problem at once, one line, each naming its field.
    """
    token = _NESTED.set(True)
    try:
        return _adapter(cls).validate_python(data, context=context)
    except ValidationError as exc:
        raise SpecError(one_line(exc, where, cls)) from None
    finally:
        _NESTED.reset(token)


def declared(where: str) -> Callable[[type[T]], type[T]]:
    """A frozen pydantic dataclass with the house config (`DECLARED`) whose bad values, made in code
    (``Sampling(cap=0)``, `dataclasses.replace`) or from a mapping, are one SpecError naming every
    bad field: ``<where>: <field>: <problem> (got <value>)``. Made inside another declared model
    or `validate`, its problems join the outer ones at their place (``data.sampling.cap``).
    """
    def one_line_error(cls: type, data: object, handler: Callable) -> Any:
        names = list(cls.__pydantic_fields__)
        if isinstance(data, ArgsKwargs) and 0 < len(data.args) <= len(names):
            # ``Member("x", "adapter", ...)``: its errors name the fields, not positions
            data = ArgsKwargs((), {**dict(zip(names, data.args, strict=False)), **(data.kwargs or {})})
        if _NESTED.get():
            return handler(data)
        token = _NESTED.set(True)
        try:
            return handler(data)
        except ValidationError as exc:
            raise SpecError(one_line(exc, where, cls)) from None
        finally:
            _NESTED.reset(token)

    def make(cls: type[T]) -> type[T]:
        cls._one_line = model_validator(mode="wrap")(classmethod(one_line_error))  # type: ignore[attr-defined]
        return pydantic_dataclass(frozen=True, config=DECLARED)(cls)

    return make


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    return TypeAdapter(cls)


class Problems:
    """What a validator found, each at its place under the value it checks; `check` raises them
    together as pydantic's own error, so they join the other fields' problems."""

    def __init__(self) -> None:
        self.items: list[InitErrorDetails] = []

    def add(self, loc: Loc, message: str) -> None:
        self.items.append(InitErrorDetails(type=PydanticCustomError("spec", message), loc=loc, input=None))

    def check(self) -> None:
        if self.items:
            raise ValidationError.from_exception_data("spec", self.items)


def field_names(cls: type) -> list[str]:
    """The keys a user may write for a declared model (aliases where a field has one)."""
    hidden = getattr(cls, "_set_by_loader", ())
    return [f.alias or name for name, f in cls.__pydantic_fields__.items() if name not in hidden]


def one_line(exc: ValidationError, where: str, root: type | None = None) -> str:
    """``<where>: <problem>; <problem>...`` with unknown keys grouped per place and the known
    ones named (looked up on `root`, the model that was validated)."""
    problems: list[str | Loc] = []  # a Loc: where unknown keys go, filled once all are seen
    unknown: dict[Loc, list[str]] = {}
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            if loc[:-1] not in unknown:
                unknown[loc[:-1]] = []
                problems.append(loc[:-1])
            unknown[loc[:-1]].append(repr(loc[-1]))
            continue
        text = _message(err) + (_example(root, loc) if err["type"] in _MISSING else "")
        problems.append(f"{_path(loc)}: {text}" if loc else text)
    lines = []
    for problem in problems:
        if isinstance(problem, tuple):
            keys, known = unknown[problem], _known_keys(root, problem)
            text = f"unknown field{'s' * (len(keys) > 1)} {', '.join(keys)}"
            text += f"; expected one of {', '.join(sorted(known))}" if known else ""
            problem = f"{_path(problem)}: {text}" if problem else text
        lines.append(problem)
    return f"{where}: " + "; ".join(lines)


_MISSING = ("missing", "missing_argument", "missing_keyword_only_argument")
_WHOLE, _NUMBER, _MAPPING, _LIST = "must be a whole number", "must be a number", "must be a mapping", "must be a list"
_MESSAGES = {
    "int_type": _WHOLE, "int_parsing": _WHOLE, "int_from_float": _WHOLE,
    "float_type": _NUMBER, "float_parsing": _NUMBER, "finite_number": "must be a finite number",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "string_type": "must be a string", "string_too_short": "must not be empty",
    "dict_type": _MAPPING, "dataclass_type": _MAPPING, "dataclass_exact_type": _MAPPING,
    "model_type": _MAPPING, "tuple_type": _LIST, "list_type": _LIST,
    "greater_than_equal": "must be >= {ge}", "greater_than": "must be > {gt}",
    "less_than": "must be < {lt}", "less_than_equal": "must be <= {le}",
    "too_short": "must have at least {min_length} entries",
}


def _message(err: Mapping[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _MISSING:
        return "required"
    if kind == "spec":
        return err["msg"]
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        # pydantic writes "'a', 'b' or 'c'"; the house writes "a, b, c"
        text = "must be one of " + ctx["expected"].replace("'", "").replace(" or ", ", ")
    else:
        text = _MESSAGES.get(kind, err["msg"]).format(**ctx)
    return f"{text} (got {err['input']!r})"


def _path(loc: Loc) -> str:
    """``search_space.lr``, ``enqueue[0].lora_r``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _type_at(kind: Any, loc: Loc) -> Any:
    """The declared model at `loc` under `kind` (None when `loc` leads elsewhere)."""
    parts = list(loc)
    while kind is not None:
        origin = typing.get_origin(kind)
        if origin in (typing.Union, types.UnionType):
            kind = next((a for a in typing.get_args(kind) if a is not type(None)), None)
        elif origin is typing.Annotated:
            kind = typing.get_args(kind)[0]
        elif hasattr(kind, "__pydantic_fields__"):
            if not parts:
                return kind
            field = _fields(kind).get(parts.pop(0))
            kind = field.annotation if field else None
        elif origin in (dict, tuple, list) and parts:  # a key or an index: step into the values
            parts.pop(0)
            args = typing.get_args(kind)
            kind = args[0] if origin in (tuple, list) else args[-1] if args else None
        else:
            return None
    return None


def _fields(cls: type) -> dict[str, Any]:
    return {f.alias or name: f for name, f in cls.__pydantic_fields__.items()}


def _known_keys(root: Any, loc: Loc) -> list[str]:
    kind = _type_at(root, loc)
    return field_names(kind) if kind is not None else []


def _example(root: Any, loc: Loc) -> str:
    """``, e.g. data: {source: items.jsonl}`` for a required field that declares an example."""
    kind = _type_at(root, loc[:-1]) if loc else None
    field = _fields(kind).get(loc[-1]) if kind is not None else None
    return f", e.g. {loc[-1]}: {field.examples[0]}" if field is not None and field.examples else ""
