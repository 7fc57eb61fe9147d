"""Experiments that mirror the paper's figures: simulated (fig*) and live (live-*).

The registry maps a name to the module that runs it and how to call it, without importing
the module (live experiments import the server stack; simulated ones matplotlib), so that
`superserve experiment --help` stays light. Add an experiment with `register(...)` at the
bottom of this file or from a plugin module before the CLI parses its arguments.

    kind "sim":  module.run_experiment(name, Ctx) -> list[record]   (experiments.simulated)
    kind "live": module.run_live_experiment(name, args, out_dir) -> list[record]
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXPERIMENTS", "ExperimentEntry", "register"]


@dataclass(frozen=True)
class ExperimentEntry:
    name: str
    kind: str  # "sim" or "live"
    module: str  # dotted module path holding the runner
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("sim", "live"):
            raise ValueError(f"experiment {self.name!r}: kind={self.kind!r} must be sim or live")


EXPERIMENTS: dict[str, ExperimentEntry] = {}


def register(name: str, kind: str, module: str, help: str = "") -> ExperimentEntry:
    """Add (or replace) an experiment by name."""
    entry = ExperimentEntry(name, kind, module, help)
    EXPERIMENTS[name] = entry
    return entry


_SIM = "superserve.experiments.simulated"
register("fig1c", "sim", _SIM, "SLO misses as the actuation delay grows")
register("fig8", "sim", _SIM, "MAF-like trace: SuperServe vs Clipper+ vs INFaaS tradeoff")
register("fig9", "sim", _SIM, "bursty grid: variant rate x CV^2")
register("fig10", "sim", _SIM, "time-varying grid: end rate x acceleration")
register("fig11a", "sim", _SIM, "fault tolerance: one of 8 workers killed every 12 s")
register("fig11c", "sim", _SIM, "SlackFit vs MaxBatch vs MaxAcc")
register("live-tradeoff", "live", "superserve.experiments.live",
         "live servers: SlackFit vs Clipper+ vs INFaaS")
register("live-fault", "live", "superserve.experiments.live_fault",
         "live servers: a worker killed at intervals (--backend local|ray)")
