"""A trial's checkpoint: what `fit` needs to go on from step K instead of step 0.

One file, ``checkpoint.pt``, in the folder the caller names: the LoRA weights (not the frozen
base), optimizer and schedule state, the torch RNG (LoRA dropout draws from it), the loss and
validation history, and the config it was made with. The data order needs no state: it is a
function of the seed, and a resumed run skips the batches it already saw (`pricer.train.step.batch_order`).
On an 8B model a retried trial that resumes saves the hours its first try already trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pricer.atomic import replacing
from pricer.errors import SpecError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

FILE = "checkpoint.pt"


class Config(Protocol):
    def to_dict(self) -> dict: ...


class Trainable(Protocol):
    """What a checkpoint saves and restores of a set-up run (`pricer.train.step.Run` is one)."""

    config: Config
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


class Progress(Protocol):
    """How far a run got (`pricer.train.loop.Fit` is one)."""

    steps: int
    losses: list[tuple[int, float]]
    val_curve: list[tuple[int, float]]
    tokens: int
    seconds: float


@dataclass
class Checkpoint:
    """A checkpoint read back; `restore` puts its state into a freshly set-up run."""

    step: int
    losses: list[tuple[int, float]]
    val_curve: list[tuple[int, float]]
    tokens: int
    seconds: float
    state: dict[str, Any]

    def restore(self, run: Trainable) -> None:
        import torch
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(run.model, self.state["lora"])
        run.optimizer.load_state_dict(self.state["optimizer"])
        run.scheduler.load_state_dict(self.state["scheduler"])
        torch.set_rng_state(self.state["rng"])
        if self.state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.state["cuda_rng"])


def save_checkpoint(run: Trainable, fit: Progress, folder: Path) -> Path:
    """Write `run`'s trainable state after ``fit.steps`` steps to ``folder/checkpoint.pt``.

    Written to a temporary name, flushed to disk and renamed over the last one
    (`pricer.atomic`), so a process killed mid-write or a full disk leaves the previous
    checkpoint whole; a temporary a killed writer left behind is removed.
    """
    import torch
    from peft import get_peft_model_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "step": fit.steps, "losses": list(fit.losses), "val_curve": list(fit.val_curve),
        "tokens": fit.tokens, "seconds": fit.seconds, "config": run.config.to_dict(),
        "lora": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(run.model).items()},
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    path = folder / FILE
    for stale in [*folder.glob(f".{FILE}.*.tmp"), *folder.glob(f"{FILE}.partial-*")]:
        stale.unlink(missing_ok=True)  # one trial process writes this folder: nobody else's
    with replacing(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(folder: Path, config: Config) -> Checkpoint | None:
    """The checkpoint in `folder`, or None when there is none or it can't be read (corrupted,
    truncated: the trial then starts from step 0 rather than fail).

    Raises:
        SpecError: it was made with another training config (resuming would mix two trials).
    """
    import torch

    path = Path(folder) / FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not {"config", "step", "lora", "optimizer"} <= state.keys():
            raise ValueError("not a checkpoint of this project")
    except Exception as exc:  # noqa: BLE001 -- torch.load raises many kinds on a damaged file
        log.warning("%s: unreadable (%s: %s); training from step 0", path, type(exc).__name__, exc)
        return None
    if state["config"] != config.to_dict():
        changed = sorted(k for k in config.to_dict() if state["config"].get(k) != config.to_dict()[k])
        raise SpecError(f"{path}: made with another training config ({', '.join(changed)} differ); "
                        "can't resume from it")
    return Checkpoint(step=int(state["step"]), losses=[(int(s), float(v)) for s, v in state["losses"]],
                      val_curve=[(int(s), float(v)) for s, v in state["val_curve"]], tokens=int(state["tokens"]),
                      seconds=float(state["seconds"]), state=state)
