"""Loading a catalog model for LoRA: bitsandbytes nf4 (or plain bf16), its tokenizer set up for
batched prompts, and the CPU gradient trap defused."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pricer.errors import ModelUnavailable, SpecError
from pricer.model.catalog import ModelSpec, materialize
from pricer.model.weights import built_once, cached, folder_stamp

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

QUANTIZATIONS = ("nf4", "none")
# Prompt length up to which eager attention beats sdpa on a CPU. Measured here (bf16, SmolLM2): a
# training step 18 % faster at 4 x 180 tokens and 17 % at 2 x 512, a 16-prompt prefill 6-10 %
# faster; at 1024 tokens eager's full score matrices make a prefill twice as slow.
EAGER_CPU_MAX_TOKENS = 512


def pick_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 wherever the hardware runs it natively, else fp32.

    On a CPU with AVX512-bf16 bf16 is the fastest dtype; on an AVX2-only CPU a bf16 matmul falls
    back to a reference kernel 8x slower than fp32 (a SmolLM2 forward: 25 s instead of 3 s).
    """
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def load_tokenizer(spec: ModelSpec, folder=None) -> PreTrainedTokenizerBase:
    """The model's tokenizer with the entry's pad token, padding side and chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder or materialize(spec))
    if spec.pad_token:
        if spec.pad_token not in tokenizer.get_vocab():
            raise SpecError(f"model {spec.name}: pad_token {spec.pad_token!r} is not in its tokenizer's "
                            "vocabulary; set pad_token to one of its special tokens")
        tokenizer.pad_token = spec.pad_token
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = spec.padding_side
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    if spec.chat and not tokenizer.chat_template:
        raise SpecError(f"model {spec.name}: variant is instruct but its tokenizer has no chat template; "
                        "set the entry's chat_template or use variant: base")
    return tokenizer


def load_model(spec: ModelSpec, quantization: str = "nf4", *, device: torch.device | None = None,
               dtype: torch.dtype | None = None,
               tokenizer_from: Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The frozen base model (nf4 + double quant, or unquantized for ``quantization="none"``) and
    tokenizer.

    Args:
        device: defaults to CUDA when present, else CPU.
        dtype: the compute dtype; defaults to `compute_dtype` (bf16 where the hardware runs it).
        tokenizer_from: the folder to read the tokenizer from (an adapter folder's own copy)
            instead of the base's; read once either way (Gemma's 262k vocabulary: about 3 s).
    """
    if quantization not in QUANTIZATIONS:
        raise SpecError(f"quantization must be one of {QUANTIZATIONS} (got {quantization!r})")
    folder = materialize(spec)
    tokenizer = load_tokenizer(spec, tokenizer_from or folder)
    device = device or pick_device()
    dtype = dtype or compute_dtype(device)
    if quantization == "nf4":
        model = _load_nf4(spec, folder, dtype, device)
    else:
        model = _from_pretrained(spec, folder, dtype, device)
    disable_cpu_repack(model)
    fold_head_input(model)
    model.requires_grad_(False)
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_nf4(spec: ModelSpec, folder: Path, dtype: torch.dtype, device: torch.device) -> PreTrainedModel:
    """The base in nf4 + double quant. On a CPU, bitsandbytes quantizes in plain torch, most of a
    small model's load (SmolLM2: 1.5 s of 2.3 s), and every trial and predictor loads its base: a
    base from the pricer's or the hub's cache is quantized once per compute dtype into a copy
    there (`weights.built_once`). A GPU quantizes as it loads, and a user's own folder may change
    under its name: both are quantized at each load."""
    import bitsandbytes
    import transformers
    from transformers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=dtype)
    if device.type != "cpu" or not cached(folder):
        return _from_pretrained(spec, folder, dtype, device, config)
    built: list[PreTrainedModel] = []

    def quantize(scratch: Path) -> None:
        model = _from_pretrained(spec, folder, dtype, device, config)
        built.append(model)
        model.save_pretrained(scratch)

    name = f"{spec.name}.nf4-{folder_stamp(folder, str(dtype), bitsandbytes.__version__, transformers.__version__)}"
    try:
        copy = built_once(name, quantize)
    except Exception as exc:
        # a cache that takes no copy (a full disk: safetensors' own error type; a read-only volume)
        # costs the copy, not the load
        if not built and not isinstance(exc, OSError):
            raise
        log.warning("%s: no nf4 copy written to the cache (%s); quantizing at each load", spec.name,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return built[0] if built else _from_pretrained(spec, folder, dtype, device, config)
    return built[0] if built else _from_pretrained(spec, copy, dtype, device)


def _from_pretrained(spec: ModelSpec, folder: Path, dtype: torch.dtype, device: torch.device,
                     quantization_config=None) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    # an explicit quantization_config=None would drop a quantized copy's own (its weights then mismatch)
    quantized = {"quantization_config": quantization_config} if quantization_config else {}
    with _loading_report() as report:
        try:
            return AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, attn_implementation=spec.attn_implementation, device_map={"": device},
                **quantized)
        except OSError as exc:
            raise ModelUnavailable(f"{spec.name}: weights not loadable from {folder}: {exc}") from None
        except RuntimeError:
            if any("can't allocate memory" in line for line in report):
                raise MemoryError(f"{spec.name}: out of memory while loading its weights; free memory "
                                  "or raise PRICER_MEMORY_GIB") from None
            raise


@contextlib.contextmanager
def _loading_report() -> Iterator[list[str]]:
    """The lines transformers logs while loading. When a weight fails to convert (quantize), it
    logs why (an allocation that failed...) and raises a RuntimeError that doesn't say."""
    lines: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def prefer_eager_on_cpu(model: PreTrainedModel, seq_len: int) -> bool:
    """Switch a CPU model to eager attention when its prompts are short enough to gain from it
    (`EAGER_CPU_MAX_TOKENS`); returns whether it switched. GPUs keep the entry's kernel."""
    if model.device.type != "cpu" or seq_len > EAGER_CPU_MAX_TOKENS:
        return False
    if model.config._attn_implementation == "eager":
        return False
    model.set_attn_implementation("eager")
    return True


def fold_head_input(model: torch.nn.Module) -> None:
    """Hand the output head a contiguous input, so that torch folds it into one 2-D matmul.

    `generate` asks for the last position's logits only, a strided ``[:, -1:, :]`` slice; torch can't
    fold that into a 2-D matmul and runs a batched one with the weight expanded to every row: on a
    CPU it copied SmolLM2's 49k x 576 head once per prompt, a quarter of a batch-16 prefill and a
    third of a batch-48 one.
    """
    def contiguous(_module, args):
        return (args[0].contiguous(), *args[1:])

    model.get_output_embeddings().register_forward_pre_hook(contiguous)


def disable_cpu_repack(model: torch.nn.Module) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for AVX512-bf16 on an eval-mode forward.

    The repacked weights silently break the LoRA backward: every later training step gets no
    gradients (all ``.grad`` None, no error). Returns how many layers were switched.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)
