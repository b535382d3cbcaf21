"""Data: readers (jsonl, CSV, Parquet, hub), curation, balancing, splits and the built dataset.

May import the top of `pricer` (items, metrics, errors) only.
"""
