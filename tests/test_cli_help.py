"""The CLI speaks to users: `pricer --help` says what the tool does and what to type first, every
flag of every verb has help that shows its default, and `pricer train`'s flags are TrainConfig's
fields (so a new field is a new flag)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterator

from pricer.train.config import TrainConfig
from sweeps.cli.flags import config_from_flags
from sweeps.cli.main import build_parser


def _verbs(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("pricer",)) -> Iterator:
    """Every parser under `parser`, with its command line (``pricer bench``, ``pricer data build``)."""
    parser.format_help()  # a parser that adds its flags when first used adds them now
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _verbs(sub, (*path, name))


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_pricer_help_opens_with_what_it_does_and_the_first_command() -> None:
    text = build_parser().format_help()
    opening = text.split("\n\n")[1]  # after the usage line
    assert "price" in opening and "Optuna" in opening and "MLflow" in opening
    assert text.index("make demo") < text.index("positional arguments")
    assert "pricer launch studies/quickstart.yaml" in text
    assert "thin sub-commands" not in text  # what it does, not how the CLI is built


def test_every_flag_of_every_verb_has_help_that_shows_its_default() -> None:
    bare, hidden_default = [], []
    verbs = list(_verbs(build_parser()))
    assert {"pricer train", "pricer launch", "pricer data build", "pricer bench", "pricer export"} <= {v for v, _ in verbs}
    for verb, parser in verbs:
        text = _flat(parser.format_help())
        if verb != "pricer":
            assert parser.description and _flat(parser.description) in text, f"{verb} --help says not what it does"
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.help == argparse.SUPPRESS:
                continue
            name = "/".join(action.option_strings) or action.dest
            if not (action.help or "").strip():
                bare.append(f"{verb} {name}")
            elif action.default not in (None, False) and f"(default: {action.default})" not in text:
                hidden_default.append(f"{verb} {name}")
    assert not bare, f"flags without help: {bare}"
    assert not hidden_default, f"help without the default: {hidden_default}"


def test_train_flags_are_the_fields_of_train_config() -> None:
    parser = dict(_verbs(build_parser()))["pricer train"]
    dests = {action.dest for action in parser._actions}
    assert set(TrainConfig.__pydantic_fields__) <= dests
    # a field's description is its flag's help
    text = _flat(parser.format_help())
    for name, info in TrainConfig.__pydantic_fields__.items():
        assert _flat(info.description) in text, name


def test_train_flags_make_the_config_with_defaults_for_the_rest() -> None:
    args = build_parser().parse_args(["train", "--model", "gemma-3-270m", "--data", "d", "--out", "o",
                                      "--lr", "2e-4", "--micro-batch-size", "2", "--checkpoint-every", "5",
                                      "--eval-batch-size", "4", "--target-modules", "attention"])
    config = config_from_flags(TrainConfig, args)
    assert config == TrainConfig(model="gemma-3-270m", learning_rate=2e-4, micro_batch_size=2, checkpoint_every=5,
                                 eval_batch_size=4, target_modules="attention")
    changed = {f.name for f in dataclasses.fields(TrainConfig)
               if getattr(config, f.name) != getattr(TrainConfig(), f.name)}
    assert changed == {"model", "learning_rate", "micro_batch_size", "checkpoint_every", "eval_batch_size",
                       "target_modules"}
