"""Price prompts: the question, the product text cut to a token budget, and the answer, with only
the price tokens labelled.

Base models read ``How much does this cost to the nearest dollar?\\n\\n{text}\\n\\nPrice is $`` and
continue with ``{round(price)}.00``. Instruct models get the same question and text as the user turn
of their chat template and the same ``Price is $...`` as the assistant turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pricer.errors import SpecError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

QUESTION = "How much does this cost to the nearest dollar?"
PRICE_PREFIX = "Price is $"
DEFAULT_MAX_TOKENS = 160
IGNORE = -100  # the label of every token that is not part of the price


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


def prompt_text(tokenizer: PreTrainedTokenizerBase, text: str, *, chat: bool,
                max_tokens: int = DEFAULT_MAX_TOKENS) -> str:
    """The prompt as a string, ending in ``Price is $`` (chat: rendered through the template)."""
    question = f"{QUESTION}\n\n{cut_text(tokenizer, text, max_tokens)}"
    if not chat:
        return f"{question}\n\n{PRICE_PREFIX}"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return rendered + PRICE_PREFIX


def encode(tokenizer: PreTrainedTokenizerBase, text: str, price: float | None = None, *, chat: bool,
           max_tokens: int = DEFAULT_MAX_TOKENS) -> Example:
    """Tokenize one prompt (and its answer when ``price`` is given), labelling only the price.

    The answer is tokenized together with the prompt and split where the prompt ends, so training
    sees exactly the tokens a greedy decode after the prompt would produce.
    """
    prompt = prompt_text(tokenizer, text, chat=chat, max_tokens=max_tokens)
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


def template_tokens(tokenizer: PreTrainedTokenizerBase, *, chat: bool) -> int:
    """Tokens a prompt adds around its product text: the question, the chat template, and the
    longest answer a curated price has."""
    return len(encode(tokenizer, "", 999.0, chat=chat).input_ids)


def encode_many(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str],
                prices: Sequence[float] | None = None, *, chat: bool,
                max_tokens: int = DEFAULT_MAX_TOKENS) -> list[Example]:
    prices = prices if prices is not None else [None] * len(texts)
    return [encode(tokenizer, t, p, chat=chat, max_tokens=max_tokens) for t, p in zip(texts, prices, strict=True)]
