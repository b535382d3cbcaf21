"""Reading what a study wrote: leaderboard, export, ensemble export, report, compare, the MLflow UI.

May import `sweeps.run`, `sweeps.track`, `sweeps.spec` and `pricer`.
"""
