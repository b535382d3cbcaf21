"""MLflow: runs, params, artifacts, the registry, redaction and store checks.

May import `sweeps.spec` and `pricer`.
"""
