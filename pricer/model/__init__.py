"""Models: the catalog, sources (hub, GGUF, toys, random weights of a real shape), 4-bit loading,
the memory plan, prompts and the adapter folder.

May import `pricer.data` and the top of `pricer`.
"""
