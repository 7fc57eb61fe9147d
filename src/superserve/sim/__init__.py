"""Discrete-event simulation of SuperServe's router and workers (no torch)."""
