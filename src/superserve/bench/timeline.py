"""What a live run looked like over time: progress while it runs, a binned timeline after.

- `LiveProgress`: fed every finished request by the load generator, it prints the offered
  rate, the SLO attainment so far and the accuracy being served now. On a terminal it
  rewrites one line; when the output is a file or a pipe (where a tqdm bar with
  `disable=None` hides itself) it prints a plain line every `every_s` seconds instead.
- `bin_records` / `plot_timeline`: per bin (0.5-1 s) the offered load, the SLO attainment of
  the requests scheduled in that bin and the accuracy served (profiled, and realized from the
  labels), one figure per policy, plus one overlay of all policies.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from superserve.bench.loadgen import RequestRecord

__all__ = ["LiveProgress", "bin_records", "plot_timeline", "plot_timelines"]


class LiveProgress:
    """Call it with each finished `RequestRecord` (`run_loadgen(..., on_record=progress)`)."""

    def __init__(self, name: str, arrivals_s: Sequence[float], file: TextIO | None = None,
                 every_s: float = 2.0, tty: bool | None = None) -> None:
        self.name = name
        self.arrivals = np.sort(np.asarray(arrivals_s, dtype=float))
        self.file = file or sys.stderr
        self.tty = self.file.isatty() if tty is None else tty
        self.every_s = 0.5 if self.tty else every_s
        self.done = self.met = 0
        self._acc_sum = 0.0  # profiled accuracy of completions since the last line
        self._acc_n = 0
        self._last_acc = math.nan
        self._t0 = time.perf_counter()
        self._next = self.every_s
        self.lines = 0

    def __call__(self, rec: RequestRecord) -> None:
        self.done += 1
        self.met += rec.deadline_met
        if rec.outcome == "completed" and not math.isnan(rec.subnet_accuracy):
            self._acc_sum += rec.subnet_accuracy
            self._acc_n += 1
        # the run's own clock: this request finished at send time + latency since its start
        now = rec.sent_s + rec.latency_ms / 1e3
        if not math.isfinite(now):
            now = time.perf_counter() - self._t0
        if now >= self._next or self.done == len(self.arrivals):
            self._next = now + self.every_s
            self._emit(now)

    def _emit(self, now: float) -> None:
        # offered rate: trace arrivals scheduled in the last window, whatever was answered
        window = max(self.every_s, 1.0)
        lo, hi = np.searchsorted(self.arrivals, [now - window, now])
        offered = (hi - lo) / window
        if self._acc_n:
            self._last_acc = self._acc_sum / self._acc_n
        self._acc_sum, self._acc_n = 0.0, 0
        acc = f"{100 * self._last_acc:6.2f}%" if not math.isnan(self._last_acc) else "   -   "
        line = (f"{self.name:16s} t={now:5.1f}s  offered {offered:6.0f} req/s  "
                f"attainment so far {self.met / max(self.done, 1):.3f}  "
                f"subnet accuracy now {acc}  ({self.done}/{len(self.arrivals)})")
        if self.tty:
            self.file.write("\r" + line)
        else:
            self.file.write(line + "\n")
        self.file.flush()
        self.lines += 1

    def close(self) -> None:
        """End the run's line on a terminal (`compare` calls it after each run)."""
        if self.tty and self.lines:
            self.file.write("\n")
            self.file.flush()


def bin_records(records: Sequence[RequestRecord], bin_s: float = 0.5,
                duration_s: float | None = None) -> dict[str, np.ndarray]:
    """Per bin of scheduled send time: offered load (req/s), SLO attainment (met / offered),
    mean profiled and realized accuracy of the requests that completed (NaN where none)."""
    t = np.array([r.scheduled_s for r in records], dtype=float)
    end = duration_s if duration_s is not None else (t.max() if t.size else 0.0)
    nbins = max(1, math.ceil((end + 1e-9) / bin_s))
    idx = np.minimum((t / bin_s).astype(int), nbins - 1) if t.size else np.zeros(0, int)
    done = np.array([r.outcome == "completed" for r in records], dtype=float)
    met = np.array([r.deadline_met for r in records], dtype=float)
    acc = np.nan_to_num(np.array([r.subnet_accuracy for r in records], dtype=float)) * done
    right = np.array([r.correct for r in records], dtype=float) * done
    n = np.bincount(idx, minlength=nbins).astype(float)
    served = np.bincount(idx, weights=done, minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "t_s": (np.arange(nbins) + 0.5) * bin_s,
            "offered_qps": n / bin_s,
            "attainment": np.bincount(idx, weights=met, minlength=nbins) / n,
            "profiled_accuracy": np.bincount(idx, weights=acc, minlength=nbins) / served,
            "realized_accuracy": np.bincount(idx, weights=right, minlength=nbins) / served,
            "served": served,
        }


CAPACITY_LABEL = "most accurate subnet's capacity (table)"  # the capacity line's default legend


def _axes(title: str, capacity_qps: float | None, capacity_label: str = CAPACITY_LABEL):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    axes[0].set_ylabel("offered load (req/s)")
    if capacity_qps:
        axes[0].axhline(capacity_qps, color="gray", ls="--", lw=1,
                        label=capacity_label)
        axes[0].legend(loc="upper left", fontsize=8)
    axes[1].set_ylabel("SLO attainment")
    axes[1].set_ylim(-0.03, 1.03)
    axes[2].set_ylabel("served accuracy (%)")
    axes[2].set_xlabel("time (s)")
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        axes[0].set_title(title)
    return plt, fig, axes


def plot_timeline(records: Sequence[RequestRecord], path: str | Path, title: str = "",
                  bin_s: float = 0.5, capacity_qps: float | None = None,
                  capacity_label: str = CAPACITY_LABEL) -> None:
    """One policy: offered load, SLO attainment and served accuracy per bin."""
    b = bin_records(records, bin_s)
    plt, fig, axes = _axes(title, capacity_qps, capacity_label)
    axes[0].plot(b["t_s"], b["offered_qps"], color="tab:blue")
    axes[1].plot(b["t_s"], b["attainment"], color="tab:red")
    axes[2].plot(b["t_s"], 100 * b["profiled_accuracy"], color="tab:green",
                 label="profiled (subnets that served)")
    # realized accuracy per bin is a fraction of a few hundred answers: shown where >= 100
    real = np.where(b["served"] >= 100, b["realized_accuracy"], np.nan)
    axes[2].plot(b["t_s"], 100 * real, color="tab:green", alpha=0.4, lw=0.8, marker=".",
                 label="realized (labels; bins with >= 100 answers)")
    axes[2].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_timelines(runs: dict[str, Sequence[RequestRecord]], path: str | Path, title: str = "",
                   bin_s: float = 0.5, capacity_qps: float | None = None,
                   capacity_label: str = CAPACITY_LABEL) -> None:
    """All policies on one figure (same trace): who keeps the SLO, at what accuracy."""
    plt, fig, axes = _axes(title, capacity_qps, capacity_label)
    for k, (name, recs) in enumerate(runs.items()):
        b = bin_records(recs, bin_s)
        if k == 0:
            axes[0].plot(b["t_s"], b["offered_qps"], color="tab:blue")
        style = {"lw": 2.2} if name.startswith("slackfit") else {"lw": 1.1, "alpha": 0.8}
        line, = axes[1].plot(b["t_s"], b["attainment"], label=name, **style)
        axes[2].plot(b["t_s"], 100 * b["profiled_accuracy"], color=line.get_color(), **style)
    axes[1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def timeline_rows(records: Sequence[RequestRecord], bin_s: float = 1.0) -> list[dict[str, Any]]:
    """The binned timeline as JSON-ready rows (NaN -> None)."""
    b = bin_records(records, bin_s)
    keys = list(b)
    return [{k: (None if math.isnan(float(b[k][i])) else round(float(b[k][i]), 5)) for k in keys}
            for i in range(len(b["t_s"]))]
