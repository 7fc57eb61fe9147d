"""Benchmarks, load generation and experiments."""
