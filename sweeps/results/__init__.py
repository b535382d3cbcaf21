"""Reading what a study wrote: leaderboard, export, ensemble export, the MLflow UI, bench sweep.

May import `sweeps.run`, `sweeps.track`, `sweeps.spec` and `pricer`.
"""
