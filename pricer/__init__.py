"""pricer: predict a product's price from its description with a QLoRA fine-tuned LLM.

The domain package. It never imports `sweeps`, `optuna` or `mlflow`: a notebook user can
`from pricer.train import train` with neither installed.
"""

from pricer.errors import DataError, ModelUnavailable, PricerError, SpecError, TrialFailed
from pricer.items import Item

__all__ = ["DataError", "Item", "ModelUnavailable", "PricerError", "SpecError", "TrialFailed"]
