"""The study file as declared models and its search space.

May import `pricer`; no other room of `sweeps`.
"""
