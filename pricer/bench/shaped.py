"""What the benchmark measures on: random-weight models of the real architectures, and a peak-memory
meter that works the same way around either training path.

The hub models can't be downloaded for a benchmark (gated, 5-16 GB), and their speed does not
depend on their weights, so `shape_model` writes a random-weight checkpoint of the real shape
(`pricer.model.shapes.SHAPES`) once; both paths then load it through their own 4-bit loading code.
"""

from __future__ import annotations

import ctypes
import gc
import threading
from dataclasses import replace
from pathlib import Path

from pricer.errors import SpecError
from pricer.model.catalog import ModelSpec
from pricer.model.shapes import SHAPES, shape_config


def shape_model(name: str, tokenizer_folder: Path, out: Path, *, layers: int | None = None,
                seed: int = 0) -> ModelSpec:
    """Write a random-weight bf16 checkpoint of the real shape `name` to `out` (once) and return a
    base-variant catalog entry for it.

    Args:
        tokenizer_folder: a tokenizer whose ids fit every benchmark vocabulary (SmolLM2's 49k);
            the real ones can't be downloaded, and the text only has to be realistic in length.
        layers: fewer decoder layers than the real model: only for checking the code path on a CPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name not in SHAPES:
        raise SpecError(f"bench: unknown shape {name!r} (known: {', '.join(SHAPES)})")
    shape = SHAPES[name] if layers is None else replace(SHAPES[name], layers=layers)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    if len(tokenizer) > shape.vocab:
        raise SpecError(f"bench: tokenizer at {tokenizer_folder} has {len(tokenizer)} tokens, more than "
                        f"the {shape.vocab} of shape {name}")
    if not (out / "config.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed)
        # torch draws normal numbers on a CPU at ~9 ns each whatever the threads (measured here):
        # 75 s for an 8B model, a second on a GPU
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = AutoModelForCausalLM.from_config(shape_config(shape), dtype=torch.bfloat16)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        del model
        gc.collect()
    pad = tokenizer.pad_token or tokenizer.eos_token
    return ModelSpec(name=f"{name}-random", family=shape.model_type, variant="base", source=str(out),
                     pad_token=pad, notes=f"random weights, shape of {name}")


class PeakMemory:
    """Peak memory of what runs inside the `with` block, in GiB.

    CUDA: `max_memory_allocated` after resetting the peak on entry (the allocator's own count).
    CPU: a thread samples the process's RSS every `interval` seconds and keeps the highest value
    minus the RSS on entry, after a `gc` + `malloc_trim` that hands memory freed by an earlier
    block back to the OS (otherwise a second block would reuse it and look smaller). Sampling can
    miss a spike shorter than the interval; a training step on a CPU lasts far longer.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.gib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = 0
        self._peak = 0

    def __enter__(self) -> PeakMemory:
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        _malloc_trim()
        self._base = self._peak = _rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss())

    def __exit__(self, *exc) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            self.gib = (torch.cuda.max_memory_allocated() - self._base) / 1024**3
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._peak = max(self._peak, _rss())
        self.gib = (self._peak - self._base) / 1024**3


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back explicitly
        pass
