"""Training: the config, the step, the loop and checkpoints.

May import `pricer.predict`, `pricer.model`, `pricer.data` and the top of `pricer`.
"""

from pricer.train.config import TrainConfig
from pricer.train.loop import Result, train

__all__ = ["Result", "TrainConfig", "train"]
