"""Data: sources (files, URLs, ``amazon2023:<Category>``), readers (jsonl, CSV, Parquet, hub),
curation, shards curated by worker processes, the corpus (de-duplication, balancing or the recipe's
sampling, splits), and the built dataset with its content-keyed cache.

May import the top of `pricer` (items, metrics, errors) only.
"""
