"""The study file as declared models: `study` (`StudySpec`, `load_study`, `to_config`), its
`sections` (data, a search-space entry, sampler, pruner, objective) and the search `space` as
Optuna suggestions. Imports point space -> study -> sections.

May import `pricer`; no other room of `sweeps`.
"""
