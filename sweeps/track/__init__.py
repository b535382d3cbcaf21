"""MLflow: the tracker (`tracking`), what a study records in its runs (`records`), the registry,
redaction and store checks.

May import `sweeps.spec` and `pricer`.
"""
