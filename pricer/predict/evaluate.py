"""Evaluation: batched greedy decoding of the price after ``Price is $``, parsed and scored.

Prompts are sorted by length and left-padded into batches; decoding uses the KV cache and stops
as soon as every row's number is complete (digits followed by anything else), so an item costs
one prompt forward plus a handful of one-token steps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pricer.data.curate import MAX_PRICE
from pricer.data.dataset import as_items
from pricer.items import Item
from pricer.metrics import Metrics, parse_price, score
from pricer.model.batches import pad_batch
from pricer.model.prompts import DEFAULT_MAX_TOKENS, Example, encode
from pricer.predict.intervals import DEFAULT_LEVELS, PriceRange, interval_scores
from pricer.predict.pricetree import DECODES, DEFAULT_DECODE, median_prices, price_ranges

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pricer.data.neighbors import Neighbor

# "999.00" is six digit-per-token tokens; the number is complete at the "." already
MAX_NEW_TOKENS = 6
EVAL_BATCH_SIZE = 32
# Curated prices have at most this many integer digits; a model that keeps writing digits has
# said all it can say about an item in range by then. Reading only these digits also makes the
# batched path agree with the recipe's fixed 3 one-digit tokens.
MAX_DIGITS = len(str(int(MAX_PRICE)))
# a number followed by something else ("129.", "45 "), or MAX_DIGITS digits already
_COMPLETE = re.compile(rf"^\s*(?:[\d,]*\d[^\d,]|\d{{{MAX_DIGITS}}})")
_TOO_MANY_DIGITS = re.compile(rf"^(\s*\d{{{MAX_DIGITS}}})\d+")


@dataclass(frozen=True)
class Evaluation:
    """Scores plus what the model wrote for each item, in the items' order."""

    metrics: Metrics
    outputs: list[str]
    predictions: list[float | None]
    # median decoding's range per item (None for a miss); empty when read greedily
    ranges: list[PriceRange | None] = field(default_factory=list)

    def rows(self, items: Sequence[Item]) -> list[dict]:
        """title, category, price, predicted (None for a miss), output per item; with ranges also
        price_low and price_high."""
        out = [{"title": i.title, "category": i.category, "price": i.price, "predicted": p, "output": o}
               for i, p, o in zip(items, self.predictions, self.outputs, strict=True)]
        for row, r in zip(out, self.ranges, strict=False):
            row["price_low"], row["price_high"] = (None, None) if r is None else (r.low, r.high)
        return out

    def rescaled(self, factor: float, items: Sequence[Item]) -> Evaluation:
        """The same predictions with every range `PriceRange.scaled` by `factor`, coverage rescored."""
        ranges = [None if r is None else r.scaled(factor) for r in self.ranges]
        return Evaluation(with_intervals(self.metrics, ranges, [i.price for i in items]), self.outputs,
                          self.predictions, ranges)


def with_intervals(metrics: Metrics, ranges: Sequence[PriceRange | None], truths: Sequence[float]) -> Metrics:
    """`metrics` with the ranges' coverage and mean relative width (`interval_scores`)."""
    coverage, width = interval_scores(ranges, truths)
    return replace(metrics, coverage=coverage, interval_width=width)


def evaluate_items(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   items: Sequence[Item | Mapping], *, chat: bool, max_tokens: int = DEFAULT_MAX_TOKENS,
                   batch_size: int = EVAL_BATCH_SIZE, progress: bool = False,
                   decode: str = DEFAULT_DECODE, levels: tuple[float, float] = DEFAULT_LEVELS,
                   neighbors: Sequence[Sequence[Neighbor]] | None = None) -> Evaluation:
    """Predict each item's price and score it against the true price.

    Args:
        chat: the prompt goes through the chat template (instruct models).
        max_tokens: the token budget of the product text in the prompt.
        decode: ``greedy`` or ``median`` (see `pricer.predict.pricetree`); the median comes with
            a range (the `levels` quantiles of the same walk), scored as coverage and width.
        neighbors: each item's similar products, listed in its prompt (None: the recipe's prompt).
    """
    started = time.perf_counter()
    items = as_items(items)
    hints = neighbors if neighbors is not None else [()] * len(items)
    examples = [encode(tokenizer, i.text, chat=chat, max_tokens=max_tokens, neighbors=n)
                for i, n in zip(items, hints, strict=True)]
    truths = [i.price for i in items]
    ranges: list[PriceRange | None] = []
    if decode == "median":
        ranges = generate_ranges(model, tokenizer, examples, levels=levels, batch_size=batch_size,
                                 progress=progress)
        outputs = ["" if r is None else str(int(r.price)) for r in ranges]
    else:
        outputs = generate_prices(model, tokenizer, examples, batch_size=batch_size, progress=progress,
                                  decode=decode)
    predictions = [parse_price(o) for o in outputs]
    metrics = score(truths, predictions, [i.category for i in items])
    if ranges:
        metrics = with_intervals(metrics, ranges, truths)
    metrics = replace(metrics, **costs(started, len(items)),
                      prompt_tokens_mean=sum(len(e.prompt_ids) for e in examples) / max(len(examples), 1))
    return Evaluation(metrics, outputs, predictions, ranges)


def costs(started: float, items: int) -> dict[str, float]:
    """What pricing `items` since `started` (``time.perf_counter``) cost: seconds per 1,000 items
    and the process's peak resident memory (Linux reports it in KiB)."""
    import resource

    seconds = time.perf_counter() - started
    return {"seconds_per_1000": 1000 * seconds / max(items, 1),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def generate_prices(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                    *, batch_size: int = EVAL_BATCH_SIZE, max_new_tokens: int = MAX_NEW_TOKENS,
                    progress: bool = False, decode: str = DEFAULT_DECODE) -> list[str]:
    """What each prompt's continuation says the price is: the greedy text (at most
    ``max_new_tokens`` tokens), or with ``decode="median"`` the median of the model's price
    distribution as text."""
    if decode not in DECODES:
        raise ValueError(f"decode: {decode!r} is not one of {', '.join(DECODES)}")
    if decode == "median":
        return _each_batch(model, examples, batch_size, progress,
                           lambda prompts: median_prices(model, tokenizer, prompts, max_digits=MAX_DIGITS))
    return _each_batch(model, examples, batch_size, progress,
                       lambda prompts: _generate_batch(model, tokenizer, prompts, max_new_tokens))


def generate_ranges(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example],
                    *, levels: tuple[float, float] = DEFAULT_LEVELS, batch_size: int = EVAL_BATCH_SIZE,
                    progress: bool = False) -> list[PriceRange | None]:
    """Each prompt's median price and its `levels` quantiles from one walk of the digit tree
    (`pricer.predict.pricetree.price_ranges`); None where the model writes no number."""
    return _each_batch(model, examples, batch_size, progress,
                       lambda prompts: price_ranges(model, tokenizer, prompts, max_digits=MAX_DIGITS,
                                                    levels=levels))


def _each_batch(model: PreTrainedModel, examples: Sequence[Example], batch_size: int, progress: bool,
                read: Callable[[list[list[int]]], list]) -> list:
    """`read` over length-sorted batches of prompts in eval mode, results in the examples' order."""
    import torch
    from tqdm.auto import tqdm

    # similar lengths share a batch, so little compute goes to padding
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].prompt_ids))
    outputs: list = [None] * len(examples)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), tqdm(total=len(examples), desc="evaluate", unit="item",
                                   disable=not progress, leave=False) as bar:
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                for i, value in zip(chunk, read([examples[i].prompt_ids for i in chunk]), strict=True):
                    outputs[i] = value
                bar.update(len(chunk))
    finally:
        model.train(was_training)
    return outputs


def _generate_batch(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]],
                    max_new_tokens: int) -> list[str]:
    import torch

    batch = pad_batch(prompts, tokenizer.pad_token_id, side="left", device=model.device)
    input_ids = batch["input_ids"]
    generated = model.generate(
        input_ids=input_ids, attention_mask=batch["attention_mask"], max_new_tokens=max_new_tokens,
        do_sample=False, num_beams=1, use_cache=True, pad_token_id=tokenizer.pad_token_id,
        stopping_criteria=[PriceComplete(tokenizer, input_ids.shape[1])],
        temperature=None, top_p=None, top_k=None)
    new = generated[:, input_ids.shape[1]:]
    return [within_range(t) for t in tokenizer.batch_decode(new.to(torch.long), skip_special_tokens=True)]


def within_range(text: str) -> str:
    """The output with a leading digit run cut to ``MAX_DIGITS`` (``"12345."`` -> ``"123"``)."""
    return _TOO_MANY_DIGITS.sub(r"\1", text)


class PriceComplete:
    """A generate() stopping criterion: a row is done once its new text holds a number followed by
    something else (``"129."``, ``"45 "``), holds ``MAX_DIGITS`` digits, or starts with no digit
    at all after a token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        done = [bool(_COMPLETE.match(t)) or (t.strip() != "" and not t.lstrip()[0].isdigit()) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
