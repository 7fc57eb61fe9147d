"""Experiments that mirror the paper's figures: simulated (fig*) and live (live-*)."""
