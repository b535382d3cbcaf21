"""pricer: predict a product's price from its description with a QLoRA fine-tuned LLM.

The domain package. It never imports `sweeps`, `optuna` or `mlflow`: a notebook user can
`from pricer.train import train` with neither installed.

The top level holds what every room uses: `items` (a product and its price), `metrics`, `errors`
(one base class, the CLI prints it as one line), `machine` (the cores and memory this process
may use) and `declared` (what the declared models share: their pydantic config, the `declared`
decorator every settings class is made with, and the one translation of a bad field into a
`SpecError` line).
"""

from pricer.errors import DataError, ModelUnavailable, PricerError, SpecError, TrialFailed
from pricer.items import Item

__all__ = ["DataError", "Item", "ModelUnavailable", "PricerError", "SpecError", "TrialFailed"]
