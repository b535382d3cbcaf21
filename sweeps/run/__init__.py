"""Running a study: opening it (`studies`), launch (workers), the objective (one trial) and the
trial process it runs in (`process`), pruning and the memory guard.

May import `sweeps.track`, `sweeps.spec` and `pricer`.
"""
