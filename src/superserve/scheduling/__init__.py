"""Scheduling: the EDF queue, SlackFit, MaxBatch, MaxAcc and the baselines. Imports no torch."""

from superserve.scheduling.base import Plan, Policy, QueueView, cannot_meet
from superserve.scheduling.edf import EDFQueue
from superserve.scheduling.policies import Clipper, Infaas, MaxAcc, MaxBatch, SlackFit
from superserve.scheduling.rate import RateEstimator
from superserve.scheduling.registry import POLICY_NAMES, make_policy

__all__ = [
           "POLICY_NAMES",
           "Clipper",
           "EDFQueue",
           "Infaas",
           "MaxAcc",
           "MaxBatch",
           "Plan",
           "Policy",
           "QueueView",
           "RateEstimator",
           "SlackFit",
           "cannot_meet",
           "make_policy",
]
