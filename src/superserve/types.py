"""Small typed values shared by the scheduler, the simulator and the live runtime.

Time is always seconds as float (`*_s`); milliseconds appear only at the edges.
"""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """The terminal states of a request. Every request ends in exactly one of them."""

    COMPLETED = "completed"  # answered with a prediction (deadline_met says whether in SLO)
    DROPPED_DEADLINE = "dropped_deadline"  # could not meet its deadline; no compute spent
    REJECTED = "rejected"  # refused by admission control (queue full, shutting down)
    FAILED = "failed"  # an internal error reached it (e.g. worker died past its deadline)
    CANCELLED = "cancelled"  # its client stopped waiting (disconnect, gRPC cancel/deadline)

    @property
    def is_success(self) -> bool:
        return self is Outcome.COMPLETED
