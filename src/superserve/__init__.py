"""SuperServe: fine-grained inference serving for unpredictable workloads.

One weight-shared supernetwork is deployed and every subnetwork of it is served at once
(SubNetAct); a deadline-aware policy (SlackFit) picks the subnetwork and batch size of every
batch. See docs/ and the paper (Khare et al., NSDI 2025, arXiv 2312.16733).

This top-level module imports nothing heavy: torch is only imported by the packages that
run models (subnetact, models, profiling.profiler, runtime.worker).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
