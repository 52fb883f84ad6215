"""Benchmarks that print figures; never part of the test suite.

A package, so that the scripts import one another as ``bench.machine``, ``bench.throughput`` and so on.
Run each from the checkout's root as a module, e.g. ``python -m bench.throughput --config all``.
"""
