"""The adapter folder a trial leaves behind: the peft adapter, the tokenizer and ``pricer.json``
(catalog entry, prompt format, token budget, training parameters, metrics). With the base weights
it is all `predict` and ``pricer evaluate --adapter`` need.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.catalog import ModelSpec
from pricer.errors import SpecError
from pricer.prompts import PRICE_PREFIX, QUESTION

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

META_FILE = "pricer.json"
FORMAT = 1


def save_adapter(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path, *, spec: ModelSpec,
                 config: Mapping, max_tokens: int, metrics: Mapping[str, Mapping | None]) -> Path:
    """Write the folder and return it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {
        "format": FORMAT,
        "model": spec.to_dict(),
        "quantization": config.get("quantization", "nf4"),
        "prompt": {"chat": spec.chat, "question": QUESTION, "price_prefix": PRICE_PREFIX,
                   "max_tokens": max_tokens},
        "train": dict(config),
        "metrics": dict(metrics),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


@dataclass
class LoadedAdapter:
    """A base model with the adapter applied, ready to generate prices."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    max_tokens: int
    meta: dict


def read_meta(folder: Path) -> dict:
    """The folder's ``pricer.json``; SpecError when it is not an adapter folder."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise SpecError(f"{folder}: not an adapter folder (no {META_FILE}); pass the --out of `pricer train`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise SpecError(f"{path}: format {meta.get('format')!r} is not supported (expected {FORMAT})")
    return meta


def load_adapter(folder: str | Path, *, device: torch.device | None = None) -> LoadedAdapter:
    """The base model named in ``pricer.json``, quantized as in training, with the adapter on top."""
    from peft import PeftModel

    from pricer.loading import load_model, load_tokenizer

    folder = Path(folder)
    meta = read_meta(folder)
    spec = ModelSpec.from_dict(meta["model"], where=f"{folder / META_FILE}: model")
    base, _ = load_model(spec, meta.get("quantization", "nf4"), device=device)
    model = PeftModel.from_pretrained(base, folder, is_trainable=False)
    model.eval()
    tokenizer = load_tokenizer(spec, folder)
    return LoadedAdapter(model, tokenizer, spec, int(meta["prompt"]["max_tokens"]), meta)


def predict(adapter: str | Path | LoadedAdapter, texts: Sequence[str], *, batch_size: int = 32,
            ) -> list[float | None]:
    """Prices for product texts (None where the model wrote no number)."""
    from pricer.evaluate import generate_prices
    from pricer.metrics import parse_price
    from pricer.prompts import encode

    loaded = adapter if isinstance(adapter, LoadedAdapter) else load_adapter(adapter)
    examples = [encode(loaded.tokenizer, t, chat=loaded.spec.chat, max_tokens=loaded.max_tokens) for t in texts]
    outputs = generate_prices(loaded.model, loaded.tokenizer, examples, batch_size=batch_size)
    return [parse_price(o) for o in outputs]
