"""One door to every folder pricer prices with: `load_predictor` reads the folder's ``pricer.json``,
picks its loader by ``kind`` and returns a `Predictor`. ``pricer predict``, ``pricer evaluate
--adapter`` and the MLflow model all go through it.

The kinds are a small table (`LOADERS`); a new kind (an ensemble of folders) adds one loader that
returns anything with a ``kind`` and ``predict(texts)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pricer.errors import SpecError
from pricer.model.adapter import ADAPTER, MERGED, META_FILE, read_meta
from pricer.model.catalog import ModelSpec
from pricer.predict.ensemble import Ensemble
from pricer.predict.intervals import DEFAULT_LEVELS, PriceRange, check_levels

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pricer.data.neighbors import NeighborIndex
    from pricer.metrics import Metrics
    from pricer.model.prompts import Example

BATCH_SIZE = 32


class Predictor(Protocol):
    """Prices for product texts; None where the model wrote no number."""

    kind: str

    def predict(self, texts: Sequence[str], *, batch_size: int = BATCH_SIZE,
                progress: bool = False) -> list[float | None]: ...


@dataclass
class ModelPredictor:
    """One causal LM that writes the price after ``Price is $``: a 4-bit base with the LoRA on top
    (``adapter``) or the LoRA merged into a bf16 base (``merged``)."""

    kind: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    spec: ModelSpec
    max_tokens: int
    meta: dict
    decode: str = "greedy"
    # the train split's neighbour index the folder carries, when its prompts list neighbours
    index: NeighborIndex | None = None

    @property
    def neighbors(self) -> int:
        return int(self.meta["prompt"].get("neighbors", 0))

    def examples(self, texts: Sequence[str]) -> list[Example]:
        """The prompts of these texts, each with its neighbours when the folder lists them."""
        from pricer.model.prompts import encode

        hints = self.index.query(texts, self.neighbors) if self.index is not None else [()] * len(texts)
        return [encode(self.tokenizer, t, chat=self.spec.chat, max_tokens=self.max_tokens, neighbors=n)
                for t, n in zip(texts, hints, strict=True)]

    def predict(self, texts: Sequence[str], *, batch_size: int = BATCH_SIZE,
                progress: bool = False) -> list[float | None]:
        """Prices for prompt-ready texts, as curation writes them: raw text goes through
        `pricer.data.curate.clean_text` (or a reader in `pricer.data.tables`) first. Not here, because scrubbing
        is not idempotent and a curated text must reach the model exactly as in training."""
        from pricer.metrics import parse_price
        from pricer.predict.evaluate import generate_prices

        examples = self.examples(texts)
        outputs = generate_prices(self.model, self.tokenizer, examples, batch_size=batch_size, progress=progress,
                                  decode=self.decode)
        return [parse_price(o) for o in outputs]

    def predict_ranges(self, texts: Sequence[str], *, levels: tuple[float, float] | None = None,
                       batch_size: int = BATCH_SIZE, progress: bool = False) -> list[PriceRange | None]:
        """Each text's median price with its range (`pricer.predict.intervals`): the folder's
        levels, widened by its calibration factor; other `levels` are the raw quantiles.

        Raises:
            SpecError: the folder reads prices greedily (a range needs median decoding).
        """
        from pricer.predict.evaluate import generate_ranges

        if self.decode != "median":
            raise SpecError("this folder reads prices greedily: price ranges come from median decoding "
                            "(retrain with decode: median)")
        own, scale = self.interval
        levels = own if levels is None else check_levels(levels)
        examples = self.examples(texts)
        ranges = generate_ranges(self.model, self.tokenizer, examples, levels=levels, batch_size=batch_size,
                                 progress=progress)
        if levels != own:
            return ranges
        return [None if r is None else r.scaled(scale) for r in ranges]

    @property
    def interval(self) -> tuple[tuple[float, float], float]:
        """The levels the folder's trial used and its calibration factor (folders from before
        ranges: the default levels, uncalibrated)."""
        recorded = self.meta.get("interval") or {}
        levels = check_levels(recorded.get("levels", DEFAULT_LEVELS), "pricer.json: interval.levels")
        return levels, float(recorded.get("scale", 1.0))


def _spec(folder: Path, meta: dict) -> ModelSpec:
    return ModelSpec.from_dict(meta["model"], where=f"{folder / META_FILE}: model")


def _load_adapter(folder: Path, meta: dict, device: torch.device | None) -> ModelPredictor:
    """The base named by the catalog entry (fetched or converted by `materialize`), quantized as in
    training, with the LoRA on top."""
    from peft import PeftModel

    from pricer.model.loading import load_model

    spec = _spec(folder, meta)
    base, tokenizer = load_model(spec, meta.get("quantization", "nf4"), device=device, tokenizer_from=folder)
    _attention_as_in_training(base, tokenizer, spec, meta)
    model = PeftModel.from_pretrained(base, folder, is_trainable=False)
    model.eval()
    return ModelPredictor(ADAPTER, model, tokenizer, spec, int(meta["prompt"]["max_tokens"]), meta, _decode(meta),
                          _index(folder, meta))


def _load_merged(folder: Path, meta: dict, device: torch.device | None) -> ModelPredictor:
    """The folder is the model: loaded in bf16, as merged (4-bit would round the LoRA update away)."""
    from pricer.model.loading import load_model

    spec = replace(_spec(folder, meta), source=str(folder.resolve()))
    model, tokenizer = load_model(spec, "none", device=device)
    _attention_as_in_training(model, tokenizer, spec, meta)
    model.eval()
    return ModelPredictor(MERGED, model, tokenizer, spec, int(meta["prompt"]["max_tokens"]), meta, _decode(meta),
                          _index(folder, meta))


def _index(folder: Path, meta: dict) -> NeighborIndex | None:
    """The neighbour index in the folder when its prompts list neighbours (`pricer.data.neighbors`).

    Raises:
        SpecError: the prompts list neighbours but the folder has no index.
    """
    if not int(meta["prompt"].get("neighbors", 0)):
        return None
    from pricer.data.neighbors import FOLDER, NeighborIndex

    if not (folder / FOLDER / "index.json").is_file():
        raise SpecError(f"{folder}: its prompts list {meta['prompt']['neighbors']} neighbours but the folder has "
                        f"no {FOLDER}/ index; copy it from the trial's adapter folder or re-export")
    return NeighborIndex.load(folder / FOLDER)


def _attention_as_in_training(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: ModelSpec,
                              meta: dict) -> None:
    """The attention kernel the trial validated with (`pricer.train.loop` picks eager for short prompts
    on a CPU). In bf16 another kernel rounds differently, by a few % of a price's probability:
    enough to move a median-decoded price by a dollar or two, so a folder would not price as its
    trial reported."""
    from pricer.model.loading import prefer_eager_on_cpu
    from pricer.model.prompts import template_tokens

    prefer_eager_on_cpu(model, int(meta["prompt"]["max_tokens"]) + template_tokens(
        tokenizer, chat=spec.chat, neighbors=int(meta["prompt"].get("neighbors", 0))))


def _decode(meta: dict) -> str:
    """How training read prices; folders from before median decoding say nothing: greedy."""
    return meta["prompt"].get("decode", "greedy")


# kind in pricer.json -> loader(folder, meta, device)
def _load_ensemble(folder: Path, meta: dict, device: torch.device | None) -> Predictor:
    """Adapters and fitted baselines weighted in log-price space (`pricer.predict.ensemble`)."""
    return Ensemble(folder, meta, lambda member: load_predictor(member, device=device))


LOADERS: dict[str, Callable[[Path, dict, torch.device | None], Predictor]] = {
    ADAPTER: _load_adapter,
    MERGED: _load_merged,
    "ensemble": _load_ensemble,
}


# what each kind's loader reads from pricer.json, checked first so a folder missing one is one line
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    ADAPTER: (("model",), ("prompt", "max_tokens")),
    MERGED: (("model",), ("prompt", "max_tokens")),
    "ensemble": (("members",),),
}


def kind_of(meta: dict) -> str:
    return meta.get("kind", ADAPTER)


def load_predictor(folder: str | Path, *, device: torch.device | None = None) -> Predictor:
    """The predictor a folder written by ``pricer train`` or ``pricer export`` holds.

    Raises:
        SpecError: not a pricer folder, or a kind this version does not know.
        ModelUnavailable: the base weights can't be had here.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    kind = kind_of(meta)
    loader = LOADERS.get(kind) if isinstance(kind, str) else None
    if loader is None:
        raise SpecError(f"{folder / META_FILE}: kind {kind!r} is not known here (known: {', '.join(LOADERS)})")
    for keys in REQUIRED.get(kind, ()):
        value: object = meta
        for depth, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                raise SpecError(f"{folder / META_FILE}: no {'.'.join(keys[:depth + 1])} (every {kind} folder's "
                                "pricer.json has one); export the folder again with `pricer export`")
            value = value[key]
    return loader(folder, meta, device)


def evaluate(predictor: Predictor, items: Sequence, *, batch_size: int = BATCH_SIZE,
             progress: bool = False) -> Metrics:
    """Score a predictor on curated items (`Item`s or dataset rows) against their true prices."""
    from pricer.data.dataset import as_items
    from pricer.metrics import score

    items = as_items(items)
    predictions = predict_items(predictor, items, batch_size=batch_size, progress=progress)
    return score([i.price for i in items], predictions, [i.category for i in items])


def predict_items(predictor: Predictor, items: Sequence, *, batch_size: int = BATCH_SIZE,
                  progress: bool = False) -> list[float | None]:
    """A predictor's prices for `Item`s (an ensemble's baselines also read details and category)."""
    if hasattr(predictor, "predict_items"):
        return predictor.predict_items(items, batch_size=batch_size, progress=progress)
    return predictor.predict([i.text for i in items], batch_size=batch_size, progress=progress)
