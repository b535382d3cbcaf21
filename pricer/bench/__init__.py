"""Benchmarks: the seed recipe's reference path, the speed bench against it, the random-weight
models of real shapes (`shaped`), decode and GPU checks.

May import every other room of `pricer`; nothing in `pricer` imports it.
"""
