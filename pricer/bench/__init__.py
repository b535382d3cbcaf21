"""Benchmarks: the seed recipe's reference path, the speed bench against it, decode and GPU checks.

May import every other room of `pricer`; nothing in `pricer` imports it.
"""
