"""Offline phase: Pareto search, latency/accuracy profiling, and the ProfileTable.

Only `table` is imported here; the search and the profiler import torch and are imported
explicitly (`superserve.profiling.profiler`, `superserve.profiling.search`).
"""

from superserve.profiling.table import ProfileTable, SubnetProfile

__all__ = ["ProfileTable", "SubnetProfile"]
