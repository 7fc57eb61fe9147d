"""Scheduling: the EDF queue, SlackFit, MaxBatch, MaxAcc and the baselines. Imports no torch."""

from superserve.scheduling.base import Plan, Policy, QueueView, cannot_meet

__all__ = ["Plan", "Policy", "QueueView", "cannot_meet"]
