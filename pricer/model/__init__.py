"""Models: the catalog, where weights come from (`weights`: hub, GGUF, the locked cache; toys),
4-bit loading, the memory plan, prompts and the adapter folder (and merging it into its base).

May import `pricer.data` and the top of `pricer`.
"""
