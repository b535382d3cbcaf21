"""Median decoding: the price as the median of the model's own distribution over prices.

Greedy decoding commits to the most likely first digit, so a model that is 40 % sure of "1" and
35 % sure of "2" writes a price in the hundreds as confidently as one in the tens, and one wrong
early digit costs hundreds of dollars. This walks the digit tree instead: after ``Price is $``
each step keeps the ``beam`` most likely digit tokens of every open prefix, and the probability
that the number ends after a prefix (any non-digit token next) goes to that prefix's value. The
prediction is the weighted median of those values, the point estimate that minimises the
expected absolute error, which is what the leaderboard ranks by.

One prompt forward per item, then ``beam`` and ``beam**2`` digit tokens appended to the prompt's
own KV cache row, each attending to the prompt and its own prefix (tree attention, `_Tree`). Tokenizers that
spend one token on several digits (Llama 3) reach three digits in one step; the walk is the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pricer.model.batches import pad_batch
from pricer.predict.intervals import PriceRange, range_of, weighted_quantile

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_BEAM = 4
# how a trial, a folder or `pricer evaluate` reads a price: the greedy text or this module's median
DECODES = ("greedy", "median")
DEFAULT_DECODE = "median"


def digit_tokens(tokenizer: PreTrainedTokenizerBase, max_digits: int) -> tuple[list[int], list[str]]:
    """The ids and texts of tokens that are 1 to ``max_digits`` ASCII digits with no leading space."""
    cached = getattr(tokenizer, "_pricer_digit_tokens", None)
    if cached and cached[0] == max_digits:
        return cached[1], cached[2]
    ids, texts = [], []
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if token and token.isascii() and token.isdigit() and len(token) <= max_digits:
            ids.append(i)
            texts.append(token)
    tokenizer._pricer_digit_tokens = (max_digits, ids, texts)
    return ids, texts


def weighted_median(mass: dict[int, float]) -> float | None:
    """The smallest value at which the cumulative share of ``mass`` reaches one half."""
    return weighted_quantile(mass, 0.5)


def price_masses(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], *,
                 max_digits: int, beam: int = DEFAULT_BEAM) -> list[dict[int, float]]:
    """For each prompt, probability mass per whole-dollar value the model may write next.

    Mass the walk drops (digits outside the beam, a first token that is no digit) is not
    renormalised here; `weighted_median` only needs the shape.
    """
    import torch

    digit_ids, digit_texts = digit_tokens(tokenizer, max_digits)
    digits = torch.tensor(digit_ids, device=model.device)
    batch = pad_batch(prompts, tokenizer.pad_token_id, side="left", device=model.device)
    input_ids, mask = batch["input_ids"], batch["attention_mask"]
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True, logits_to_keep=1)  # the whole-prompt head would cost more than the walk
    cache_arg = _cache_arg()
    cache = getattr(out, cache_arg)
    tree = _Tree(mask, tokenizer.pad_token_id, model.dtype)
    as_tree = tree_fits(model, mask.shape[1] + sum(beam ** d for d in range(1, max_digits)))
    masses: list[dict[int, float]] = [{} for _ in prompts]
    # one open prefix per row: (item, digits so far, log probability, cache slots of its digits)
    rows: list[tuple[int, str, float, tuple[int, ...]]] = [(i, "", 0.0, ()) for i in range(len(prompts))]
    logits = out.logits[:, -1]
    while True:
        logp = torch.log_softmax(logits.float(), dim=-1)
        digit_logp = logp[:, digits]
        p_digit = digit_logp.exp().sum(-1).tolist()
        top_logp, top = digit_logp.topk(min(beam, len(digit_ids)), dim=-1)
        children: list[tuple[int, int, str, float]] = []  # parent row, token id, prefix, log prob
        for r, (item, prefix, lp, _) in enumerate(rows):
            if prefix:
                _add(masses[item], prefix, math.exp(lp) * max(0.0, 1.0 - p_digit[r]))
            for k_lp, k in zip(top_logp[r].tolist(), top[r].tolist(), strict=True):
                child, child_lp = prefix + digit_texts[k], lp + k_lp
                if child.startswith("0"):  # "0.49": under a dollar, whatever follows
                    _add(masses[item], "0", math.exp(child_lp))
                elif len(child) >= max_digits:
                    _add(masses[item], child[:max_digits], math.exp(child_lp))
                else:
                    children.append((r, digit_ids[k], child, child_lp))
        if not children:
            return masses
        if as_tree:
            step, at, slots = tree.grow([(rows[c[0]][0], rows[c[0]][3], c[1]) for c in children])
            out = model(use_cache=True, **step, **{cache_arg: cache})
            cache, logits = getattr(out, cache_arg), out.logits[at]
            rows = [(rows[c[0]][0], c[2], c[3], rows[c[0]][3] + (slot,))
                    for c, slot in zip(children, slots, strict=True)]
        else:
            parents = torch.tensor([c[0] for c in children], device=model.device)
            cache.reorder_cache(parents)
            mask = torch.cat([mask[parents], mask.new_ones((len(children), 1))], dim=1)
            step = torch.tensor([[c[1]] for c in children], device=model.device)
            out = model(input_ids=step, attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                        use_cache=True, **{cache_arg: cache})
            cache, logits = getattr(out, cache_arg), out.logits[:, -1]
            rows = [(rows[c[0]][0], c[2], c[3], ()) for c in children]


class _Tree:
    """Tree attention on one cache row per prompt: every open prefix's next digit is a token
    appended to its prompt's row, attending to the prompt and to its own earlier digits only.
    Copying the cache to 16 rows per item (`reorder_cache`) moved about 1.7 GB per batch of 32
    gemma prompts at the third digit and took most of the walk."""

    def __init__(self, prompt_mask, pad_id: int, dtype) -> None:
        self.prompt = prompt_mask.bool()  # [B, L]: real prompt tokens
        self.length = prompt_mask.sum(-1)  # each prompt's real length: its first digit's position
        self.width = prompt_mask.shape[1]  # cache slots used so far
        self.pad_id, self.dtype = pad_id, dtype

    def grow(self, children: list[tuple[int, tuple[int, ...], int]]) -> tuple[dict, tuple, list[int]]:
        """Model inputs that append `children` (item, its parent's digit slots, token id), the
        (batch, position) index of each child's logits, and each child's cache slot."""
        import torch

        prompt = self.prompt
        batch, device = prompt.shape[0], prompt.device
        per_item = [0] * batch
        places = []
        for item, _, _ in children:
            places.append(per_item[item])
            per_item[item] += 1
        width = max(per_item)
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long, device=device)
        positions = torch.zeros((batch, width), dtype=torch.long, device=device)
        allowed = torch.zeros((batch, width, self.width + width), dtype=torch.bool, device=device)
        allowed[:, :, :prompt.shape[1]] = prompt[:, None, :]
        # a padding query attends to itself only, so its softmax has something to normalise
        allowed[:, torch.arange(width), self.width + torch.arange(width)] = True
        for (item, parent_slots, token), place in zip(children, places, strict=True):
            ids[item, place] = token
            positions[item, place] = self.length[item] + len(parent_slots)
            if parent_slots:
                allowed[item, place, list(parent_slots)] = True
        slots = [self.width + place for place in places]
        self.width += width
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=device).masked_fill_(
            ~allowed, torch.finfo(self.dtype).min)
        items = torch.tensor([c[0] for c in children], device=device)
        return ({"input_ids": ids, "attention_mask": mask[:, None], "position_ids": positions},
                (items, torch.tensor(places, device=device)), slots)


def tree_fits(model: PreTrainedModel, width: int) -> bool:
    """Whether the tree's 4-D mask can be used: eager or sdpa attention (flash attention takes no
    custom mask), and `width` cache slots within the model's sliding window, if it has one (that
    cache would drop the oldest tokens from under the mask). Otherwise the walk copies rows."""
    window = getattr(model.config, "sliding_window", None)
    kernel = getattr(model.config, "_attn_implementation", None)
    return kernel in ("eager", "sdpa") and (not window or width < window)


def _cache_arg() -> str:
    """The KV cache's name in forward() and its output: ``cache`` from transformers 5.2x, before
    that ``past_key_values`` (still accepted, with a warning, until 5.40)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _add(mass: dict[int, float], digits: str, p: float) -> None:
    value = int(digits)
    mass[value] = mass.get(value, 0.0) + p


def median_prices(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[list[int]], *,
                  max_digits: int, beam: int = DEFAULT_BEAM) -> list[str]:
    """Each prompt's median price as text (``"129"``), or ``""`` when the model writes no number."""
    masses = price_masses(model, tokenizer, list(prompts), max_digits=max_digits, beam=beam)
    medians = [weighted_median(m) for m in masses]
    return ["" if m is None else str(int(m)) for m in medians]


def price_ranges(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[list[int]], *,
                 max_digits: int, levels: tuple[float, float], beam: int = DEFAULT_BEAM) -> list[PriceRange | None]:
    """Each prompt's median price with the `levels` quantiles of the same walk (`range_of`), or
    None when the model writes no number. The median is `median_prices`' to the dollar."""
    masses = price_masses(model, tokenizer, list(prompts), max_digits=max_digits, beam=beam)
    return [range_of(m, levels) for m in masses]
