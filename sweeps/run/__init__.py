"""Running a study: launch (workers), the objective (one trial), pruning and the memory guard.

May import `sweeps.track`, `sweeps.spec` and `pricer`.
"""
