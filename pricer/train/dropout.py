"""LoRA dropout whose random mask is cheap on a CPU.

peft's `nn.Dropout` draws one random number per element through `bernoulli_`. On a CPU that made a
SmolLM2 LoRA step (4 x 180 tokens, q/k/v/o) 2.18 s at dropout 0.1 against 1.73 s without dropout
(medians of 5). Dropout 0.1 is the recipe's value, and the studies search 0-0.2. Here one 64-bit
draw gives four 16-bit lanes, and each lane is compared with a threshold. The mask is 3x faster to
make and the step takes 1.94 s. The drop probability is rounded to a multiple of 1/65536. GPUs keep
`nn.Dropout`, because their generator is fast.
"""

from __future__ import annotations

import torch

LANES = 65536


class CpuDropout(torch.nn.Module):
    """Inverted dropout with probability `p` (to 1/65536) from torch's global generator."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout p must be in [0, 1) (got {p})")
        self.threshold = round(p * LANES) - LANES // 2  # int16 lanes are uniform on [-32768, 32767]
        self.p = (self.threshold + LANES // 2) / LANES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        keep = words.view(torch.int16)[:n].view(x.shape) >= self.threshold
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p:.6g}"


def use_cpu_dropout(model: torch.nn.Module) -> int:
    """Swap every `nn.Dropout` of the LoRA layers of a CPU model for `CpuDropout`; returns how many."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        for name, layer in dropouts.items():
            if isinstance(layer, torch.nn.Dropout) and layer.p > 0:
                dropouts[name] = CpuDropout(layer.p)
                swapped += 1
    return swapped
