"""One error base class for everything a user can cause; the CLI prints it as one line (exit 2)."""

from __future__ import annotations


class PricerError(Exception):
    """Base class: bad input or an unavailable resource, never a bug."""


class SpecError(PricerError):
    """A study file, config or flag is invalid; the message names the field and the fix."""


class DataError(PricerError):
    """A data source is missing, unreadable or empty."""


class ModelUnavailable(PricerError):
    """A model's weights can't be loaded here (not cached, gated, unknown name)."""


class TrialFailed(PricerError):
    """A trial could not finish (out of memory, NaN loss); the reason is in the message."""
