"""Prediction: decoding (greedy, median tree), evaluation, predictors (adapter, merged, ensemble)
and the classical baselines.

May import `pricer.model`, `pricer.data` and the top of `pricer`.
"""
