"""Trace specs, the Trace value, its statistics and its file format."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from superserve.errors import TraceSpecError
from superserve.traces import generators as g

__all__ = [
    "Trace",
    "azure_functions_counts",
    "azure_llm_arrivals",
    "load_trace",
    "parse_spec",
    "trace_stats",
]

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "traces"
FILE_HEADER = "# superserve trace v1"


@dataclass(frozen=True)
class Trace:
    arrivals_s: np.ndarray  # sorted, seconds from 0
    duration_s: float
    spec: str

    def __len__(self) -> int:
        return len(self.arrivals_s)

    def save(self, path: str | Path) -> None:
        with open(path, "w") as f:
            f.write(f"{FILE_HEADER} duration_s={self.duration_s!r} spec={self.spec}\n")
            np.savetxt(f, self.arrivals_s, fmt="%.9f")

    def stats(self) -> dict[str, Any]:
        return trace_stats(self.arrivals_s, self.duration_s)


def trace_stats(arrivals_s: np.ndarray, duration_s: float) -> dict[str, Any]:
    a = np.asarray(arrivals_s)
    gaps = np.diff(a)
    per_s = np.bincount(a.astype(int), minlength=max(1, int(np.ceil(duration_s)))) if len(a) else \
        np.zeros(1)
    return {
        "requests": len(a), "duration_s": float(duration_s),
        "mean_rate": float(len(a) / duration_s) if duration_s > 0 else 0.0,
        "cv2": float(gaps.var() / gaps.mean() ** 2) if len(gaps) > 1 and gaps.mean() > 0 else 0.0,
        "peak_per_s": int(per_s.max()) if len(a) else 0,
        "p99_per_s": float(np.percentile(per_s, 99)) if len(a) else 0.0,
    }


# ----------------------------------------------------------------------------- spec parsing
_KINDS: dict[str, dict[str, tuple[type, bool]]] = {  # key -> (type, required)
    "poisson": {"rate": (float, True), "duration": (float, True)},
    "bursty": {"base": (float, True), "variant": (float, True), "cv2": (float, True),
               "duration": (float, True)},
    "timevarying": {"start": (float, True), "end": (float, True), "accel": (float, True),
                    "cv2": (float, True), "duration": (float, True)},
    "maf": {"mean": (float, True), "duration": (float, True), "functions": (int, False)},
    "azure-llm": {"name": (str, True), "rate": (float, True), "duration": (float, True)},
    "azure-functions": {"path": (str, True), "duration": (float, True), "rate": (float, False)},
}


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    kind, _, body = spec.strip().partition(":")
    kind = kind.lower()
    if kind not in _KINDS:
        raise TraceSpecError(f"unknown trace kind {kind!r} in {spec!r}; expected one of "
                             f"{', '.join(_KINDS)} or a trace file path")
    allowed = {**_KINDS[kind], "seed": (int, False)}
    params: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, val = part.partition("=")
        key = key.strip()
        if not eq:
            raise TraceSpecError(f"trace spec {spec!r}: expected key=value, got {part!r}")
        if key not in allowed:
            raise TraceSpecError(f"trace spec {spec!r}: unknown key {key!r} for {kind} "
                                 f"(allowed: {', '.join(allowed)})")
        try:
            params[key] = allowed[key][0](val.strip())
        except ValueError as e:
            raise TraceSpecError(f"trace spec {spec!r}: bad value {key}={val!r}") from e
    missing = [k for k, (_, req) in _KINDS[kind].items() if req and k not in params]
    if missing:
        raise TraceSpecError(f"trace spec {spec!r}: missing {', '.join(missing)}")
    for k, v in params.items():
        if isinstance(v, (int, float)) and k != "seed" and (v < 0 or not np.isfinite(v)):
            raise TraceSpecError(f"trace spec {spec!r}: {k}={v} must be >= 0")
    for k in ("duration", "cv2", "functions"):
        if k in params and params[k] <= 0:
            raise TraceSpecError(f"trace spec {spec!r}: {k}={params[k]} must be > 0")
    if kind == "bursty" and params["base"] + params["variant"] <= 0:
        raise TraceSpecError(f"trace spec {spec!r}: base + variant must be > 0")
    if kind == "timevarying" and params["accel"] <= 0 and params["start"] != params["end"]:
        raise TraceSpecError(f"trace spec {spec!r}: accel must be > 0 to go from start to end")
    if kind == "timevarying" and min(params["start"], params["end"]) <= 0:
        raise TraceSpecError(f"trace spec {spec!r}: start and end rates must be > 0")
    if kind == "azure-llm" and params["name"] not in ("code", "conv"):
        raise TraceSpecError(f"trace spec {spec!r}: name={params['name']!r} must be code or conv")
    return kind, params


def load_trace(spec: str) -> Trace:
    """A Trace from a spec string or a trace file path."""
    path = Path(spec)
    if path.is_file():
        return _read_file(path)
    # a spec starts with "kind:"; its values may hold paths (azure-functions:path=/a/b.csv)
    if ":" not in spec or "/" in spec.partition(":")[0]:
        raise TraceSpecError(f"{spec!r} is neither a trace spec (kind:key=value,...) nor a file")
    kind, p = parse_spec(spec)
    rng = np.random.default_rng(p.pop("seed", 0))
    build: dict[str, Callable[[], np.ndarray]] = {
        "poisson": lambda: g.poisson(p["rate"], p["duration"], rng),
        "bursty": lambda: g.bursty(p["base"], p["variant"], p["cv2"], p["duration"], rng),
        "timevarying": lambda: g.timevarying(p["start"], p["end"], p["accel"], p["cv2"],
                                             p["duration"], rng),
        "maf": lambda: g.maf(p["mean"], p["duration"], p.get("functions", 200), rng),
        "azure-llm": lambda: _rescale(azure_llm_arrivals(p["name"]), p["rate"], p["duration"]),
        "azure-functions": lambda: g.from_minute_counts(
            azure_functions_counts(p["path"]), p["duration"], p.get("rate"), rng),
    }
    arrivals = build[kind]()
    return Trace(np.asarray(arrivals, dtype=float), float(p["duration"]), spec)


def _read_file(path: Path) -> Trace:
    with open(path) as f:
        head = f.readline()
    if not head.startswith(FILE_HEADER):
        raise TraceSpecError(f"{path} is not a superserve trace file (first line {head[:40]!r})")
    meta = dict(kv.split("=", 1) for kv in head[len(FILE_HEADER):].split(" ") if "=" in kv)
    try:
        a = np.atleast_1d(np.loadtxt(path, comments="#", dtype=float))
        duration = float(meta["duration_s"])
    except (ValueError, KeyError) as e:
        raise TraceSpecError(f"{path}: malformed trace file: {e}") from e
    return Trace(np.sort(a), duration, meta.get("spec", str(path)).strip())


def _rescale(t: np.ndarray, rate: float, duration: float) -> np.ndarray:
    """Stretch or compress time so the mean rate is `rate`, then cut to `duration`; a trace
    shorter than `duration` after rescaling is repeated back to back."""
    span = t[-1] - t[0]
    t = (t - t[0]) * (len(t) / span) / rate if span > 0 else t - t[0]
    period = len(t) / rate
    reps = int(np.ceil(duration / period)) if period > 0 else 1
    out = np.concatenate([t + k * period for k in range(reps)])
    return out[out < duration]


def azure_llm_arrivals(name: str) -> np.ndarray:
    """Arrival times (s, from 0, sorted) of the Azure LLM inference trace 2023 shipped here
    (CC-BY 4.0, Microsoft Azure; see assets/traces/SOURCES.md)."""
    path = ASSETS / f"AzureLLMInferenceTrace_{name}.csv"
    with open(path) as f:
        rows = csv.reader(f)
        next(rows)
        ts = [dt.datetime.strptime(r[0][:26], "%Y-%m-%d %H:%M:%S.%f").timestamp() for r in rows]
    a = np.sort(np.array(ts))
    return a - a[0]


def azure_functions_counts(path: str | Path) -> np.ndarray:
    """Per-minute invocation counts summed over all functions of an Azure Functions 2019
    `invocations_per_function_md.anon.d*.csv` file (columns HashOwner, HashApp, HashFunction,
    Trigger, 1..1440)."""
    p = Path(path)
    if not p.is_file():
        raise TraceSpecError(f"no Azure Functions trace file at {p}")
    with open(p) as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if not header or "HashFunction" not in header:
            raise TraceSpecError(f"{p}: not an Azure Functions 2019 per-minute file "
                                 "(no HashFunction column)")
        minute_cols = [i for i, h in enumerate(header) if h.strip().isdigit()]
        if not minute_cols:
            raise TraceSpecError(f"{p}: no per-minute columns 1..1440")
        total = np.zeros(len(minute_cols))
        for r in rows:
            try:
                total += np.array([float(r[i] or 0) for i in minute_cols])
            except (ValueError, IndexError) as e:
                raise TraceSpecError(f"{p}: malformed row for function {r[2:3]}: {e}") from e
    return total
