"""Price prompts: the question, the product text cut to a token budget, and the answer, with only
the price tokens labelled.

Base models read ``How much does this cost to the nearest dollar?\\n\\n{text}\\n\\nPrice is $`` and
continue with ``{round(price)}.00``. Instruct models get the same question and text as the user turn
of their chat template and the same ``Price is $...`` as the assistant turn.

With neighbours (`pricer.data.neighbors`), a ``Similar products:`` list of each neighbour's
title (cut to `TITLE_TOKENS`) and whole-dollar price sits between the question and the text, for
base and chat models alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pricer.errors import SpecError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from pricer.data.neighbors import Neighbor

QUESTION = "How much does this cost to the nearest dollar?"
PRICE_PREFIX = "Price is $"
DEFAULT_MAX_TOKENS = 160
IGNORE = -100  # the label of every token that is not part of the price
SIMILAR = "Similar products:"
TITLE_TOKENS = 16  # a neighbour's title in the prompt, cut to this many tokens
# a neighbour line's tokens at most where no tokenizer is at hand (`pricer plan`): the title, "- ",
# ": $999" and the line break
NEIGHBOR_LINE_TOKENS = TITLE_TOKENS + 8
# the longest curated price, in the costliest form a neighbour line can take (`template_tokens`)
_WORST_NEIGHBOR_PRICE = 999.0


@dataclass(frozen=True)
class Example:
    """One tokenized prompt; ``labels`` is IGNORE everywhere except the price tokens (empty
    ``answer_ids`` when there is no price, e.g. at prediction time)."""

    prompt_ids: list[int]
    answer_ids: list[int]

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.answer_ids

    @property
    def labels(self) -> list[int]:
        return [IGNORE] * len(self.prompt_ids) + self.answer_ids


def answer(price: float) -> str:
    """What follows ``Price is $``: the price to the nearest dollar, e.g. ``"129.00"``."""
    return f"{round(price)}.00"


def cut_text(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> str:
    """The text cut to ``max_tokens`` tokens of this model's own tokenizer."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True)


def similar_products(tokenizer: PreTrainedTokenizerBase, neighbors: Sequence[Neighbor]) -> str:
    """The neighbours' block: ``Similar products:`` then one ``- {title}: ${price}`` line each."""
    lines = [f"- {cut_text(tokenizer, n.title, TITLE_TOKENS).strip()}: ${round(n.price)}" for n in neighbors]
    return "\n".join([SIMILAR, *lines])


def prompt_text(tokenizer: PreTrainedTokenizerBase, text: str, *, chat: bool,
                max_tokens: int = DEFAULT_MAX_TOKENS, neighbors: Sequence[Neighbor] = ()) -> str:
    """The prompt as a string, ending in ``Price is $`` (chat: rendered through the template).

    Args:
        neighbors: similar products listed before the product text (none: the recipe's prompt).
    """
    hint = f"{similar_products(tokenizer, neighbors)}\n\n" if neighbors else ""
    question = f"{QUESTION}\n\n{hint}{cut_text(tokenizer, text, max_tokens)}"
    if not chat:
        return f"{question}\n\n{PRICE_PREFIX}"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return rendered + PRICE_PREFIX


def encode(tokenizer: PreTrainedTokenizerBase, text: str, price: float | None = None, *, chat: bool,
           max_tokens: int = DEFAULT_MAX_TOKENS, neighbors: Sequence[Neighbor] = ()) -> Example:
    """Tokenize one prompt (and its answer when ``price`` is given), labelling only the price.

    The answer is tokenized together with the prompt and split where the prompt ends, so training
    sees exactly the tokens a greedy decode after the prompt would produce.
    """
    prompt = prompt_text(tokenizer, text, chat=chat, max_tokens=max_tokens, neighbors=neighbors)
    # a chat template writes its own BOS into the text; a plain prompt needs the tokenizer's
    specials = not chat
    prompt_ids = tokenizer(prompt, add_special_tokens=specials)["input_ids"]
    if price is None:
        return Example(prompt_ids, [])
    full_ids = tokenizer(prompt + answer(price), add_special_tokens=specials)["input_ids"]
    if full_ids[:len(prompt_ids)] != prompt_ids:
        raise SpecError(f"tokenizer {type(tokenizer).__name__} merges {PRICE_PREFIX!r} with the digits "
                        "after it; the price tokens can't be labelled apart from the prompt")
    return Example(prompt_ids, full_ids[len(prompt_ids):])


def template_tokens(tokenizer: PreTrainedTokenizerBase, *, chat: bool, neighbors: int = 0) -> int:
    """Tokens a prompt adds around its product text: the question, the chat template, the longest
    answer a curated price has, and `neighbors` neighbour lines at their longest."""
    from pricer.data.neighbors import Neighbor

    # a title of exactly TITLE_TOKENS tokens, made of the tokenizer's own pieces
    title = cut_text(tokenizer, " ".join(["Replacement"] * TITLE_TOKENS * 2), TITLE_TOKENS)
    worst = [Neighbor(title, _WORST_NEIGHBOR_PRICE, 1.0)] * neighbors
    return len(encode(tokenizer, "", 999.0, chat=chat, neighbors=worst).input_ids)


def encode_many(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                prices: Sequence[float] | None = None, *, chat: bool,
                max_tokens: int = DEFAULT_MAX_TOKENS,
                neighbors: Sequence[Sequence[Neighbor]] | None = None) -> list[Example]:
    prices = prices if prices is not None else [None] * len(texts)
    neighbors = neighbors if neighbors is not None else [()] * len(texts)
    return [encode(tokenizer, t, p, chat=chat, max_tokens=max_tokens, neighbors=n)
            for t, p, n in zip(texts, prices, neighbors, strict=True)]
