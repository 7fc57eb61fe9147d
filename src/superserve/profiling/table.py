"""ProfileTable: the one artifact between the offline phase and serving.

For each served subnet: its spec, its accuracy, and its latency at each profiled batch size on
one device. Policies, the simulator and the router read only this; they never touch a model.
This module imports no torch (and no numpy) so that scheduling/ and sim/ stay light.

File format (JSON, `schema_version` 1)::

    {"schema_version": 1, "family": "resnet", "device": "cpu", "threads": 2,
     "batch_sizes": [1, 2, 4, 8, 16, 32], "checkpoint_sha256": "...", "torch_version": "...",
     "config": {...}, "provenance": {...}, "load_ms": 12.0,
     "subnets": [{"id": 0, "spec": {...}, "accuracy": 0.97, "test_accuracy": 0.968,
                  "latency_ms": {"1": 0.9, "2": 1.1, ...}, "latency_p99_ms": {...},
                  "flops": 1234567, "params": 12345, "load_ms": 10.5}, ...]}

Accuracies are fractions in [0, 1]. Subnets are kept sorted by latency at batch 1, then by
accuracy, and their `id` is their index in that order, so the fastest subnet is id 0.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from superserve.errors import TableError

SCHEMA_VERSION = 1

__all__ = ["SCHEMA_VERSION", "ProfileTable", "SubnetProfile", "isotonic_increasing"]


@dataclass(frozen=True)
class SubnetProfile:
    """One served subnet: what it is, how accurate, and how fast per batch size."""

    id: int
    spec: Mapping[str, Any]  # family-specific, JSON-able (SubnetSpec.to_dict())
    accuracy: float  # validation-split accuracy, fraction in [0, 1]
    latency_ms: Mapping[int, float]  # batch size -> median latency in ms
    test_accuracy: float | None = None  # held-out test-split accuracy
    latency_p99_ms: Mapping[int, float] = field(default_factory=dict)
    flops: int = 0  # multiply-accumulates x2 per image
    params: int = 0
    load_ms: float | None = None  # time to load this subnet as a separate model (INFaaS)
    score: float | None = None  # finer accuracy proxy used by the search (mean p(true))
    val_top1: float | None = None  # raw validation top-1 (500 images: 0.2-point steps)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "spec": dict(self.spec),
            "accuracy": self.accuracy,
            "test_accuracy": self.test_accuracy,
            "latency_ms": {str(b): v for b, v in sorted(self.latency_ms.items())},
            "latency_p99_ms": {str(b): v for b, v in sorted(self.latency_p99_ms.items())},
            "flops": self.flops,
            "params": self.params,
        }
        if self.load_ms is not None:
            d["load_ms"] = self.load_ms
        if self.score is not None:
            d["score"] = self.score
        if self.val_top1 is not None:
            d["val_top1"] = self.val_top1
        return d


@dataclass(frozen=True)
class ProfileTable:
    """Immutable profile of one model on one device. Build with `ProfileTable.build`."""

    family: str
    subnets: tuple[SubnetProfile, ...]
    batch_sizes: tuple[int, ...]
    device: str = "cpu"
    threads: int = 1
    checkpoint_sha256: str = ""
    torch_version: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    load_ms: float | None = None  # default model-load time for baselines that load models
    schema_version: int = SCHEMA_VERSION
    # Derived, for O(1) lookups on the hot path: lat_s[i][j] = latency of subnet i at
    # batch_sizes[j] in seconds; acc[i] = accuracy of subnet i.
    lat_s: tuple[tuple[float, ...], ...] = field(init=False, repr=False, compare=False)
    acc: tuple[float, ...] = field(init=False, repr=False, compare=False)
    fastest_s: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise TableError(
                f"unsupported ProfileTable schema_version={self.schema_version!r}; "
                f"this SuperServe reads version {SCHEMA_VERSION}"
            )
        if not self.subnets:
            raise TableError("ProfileTable has no subnets")
        if not self.batch_sizes or list(self.batch_sizes) != sorted(set(self.batch_sizes)):
            raise TableError(
                f"batch_sizes must be strictly increasing, got {list(self.batch_sizes)}"
            )
        if self.batch_sizes[0] < 1:
            raise TableError(f"batch sizes must be >= 1, got {list(self.batch_sizes)}")
        rows = []
        for i, s in enumerate(self.subnets):
            if s.id != i:
                raise TableError(f"subnet at index {i} has id={s.id}; ids must equal positions")
            if not (0.0 <= s.accuracy <= 1.0):
                raise TableError(f"subnet {i}: accuracy={s.accuracy!r} is not in [0, 1]")
            missing = [b for b in self.batch_sizes if b not in s.latency_ms]
            if missing:
                raise TableError(f"subnet {i}: latency_ms lacks batch sizes {missing}")
            row = tuple(float(s.latency_ms[b]) / 1e3 for b in self.batch_sizes)
            bad = [v for v in row if not (v > 0.0 and math.isfinite(v))]
            if bad:
                raise TableError(f"subnet {i}: latencies must be positive and finite, got {bad}")
            rows.append(row)
        # JSON-normal metadata, so a table equals itself after a save/load round trip
        object.__setattr__(self, "config", json.loads(json.dumps(dict(self.config))))
        object.__setattr__(self, "provenance", json.loads(json.dumps(dict(self.provenance))))
        object.__setattr__(self, "lat_s", tuple(rows))
        object.__setattr__(self, "acc", tuple(s.accuracy for s in self.subnets))
        object.__setattr__(self, "fastest_s", min(r[0] for r in rows))

    # ----------------------------------------------------------------- construction
    @classmethod
    def build(cls, family: str, subnets: Sequence[SubnetProfile], batch_sizes: Sequence[int],
              **meta: Any) -> ProfileTable:
        """Sort subnets by (latency at the smallest batch, accuracy) and renumber their ids."""
        b0 = min(batch_sizes)
        order = sorted(subnets, key=lambda s: (s.latency_ms[b0], s.accuracy))
        renumbered = tuple(replace(s, id=i) for i, s in enumerate(order))
        return cls(family=family, subnets=renumbered, batch_sizes=tuple(batch_sizes), **meta)

    # ----------------------------------------------------------------- lookups
    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    def __len__(self) -> int:
        return len(self.subnets)

    def latency_s(self, subnet: int, batch_size: int) -> float:
        """Latency of `subnet` at any batch size: exact at profiled sizes, linear between
        them, and linear extrapolation from the last two beyond the largest."""
        row = self.lat_s[subnet]
        bs = self.batch_sizes
        if batch_size <= bs[0]:
            return row[0]
        for j in range(1, len(bs)):
            if batch_size <= bs[j]:
                lo, hi = bs[j - 1], bs[j]
                return row[j - 1] + (row[j] - row[j - 1]) * (batch_size - lo) / (hi - lo)
        if len(bs) == 1:
            return row[0] * batch_size / bs[0]
        slope = (row[-1] - row[-2]) / (bs[-1] - bs[-2])
        return row[-1] + slope * (batch_size - bs[-1])

    def fastest_latency_s(self) -> float:
        """The fastest any request can be served: the quickest subnet at the smallest batch."""
        return self.fastest_s

    def subnet_by_id(self, subnet_id: int) -> SubnetProfile:
        if not 0 <= subnet_id < len(self.subnets):
            raise TableError(f"no subnet id={subnet_id}; this table has ids 0..{len(self) - 1}")
        return self.subnets[subnet_id]

    def closest_by_accuracy(self, accuracy: float) -> int:
        """Id of the subnet whose accuracy is closest to `accuracy` (ties: the faster)."""
        return min(range(len(self)), key=lambda i: (abs(self.acc[i] - accuracy), self.lat_s[i][0]))

    def load_s(self, subnet: int) -> float:
        """Model-load time of `subnet` for baselines that load separate models (0 if unknown)."""
        v = self.subnets[subnet].load_ms
        if v is None:
            v = self.load_ms
        return (v or 0.0) / 1e3

    def mismatches(self, *, family: str | None = None, checkpoint_sha256: str | None = None,
                   device: str | None = None, threads: int | None = None) -> list[str]:
        """What differs between this table and the model / device it is about to be used for
        (only the fields given are compared); empty when it fits."""
        want = {"family": family, "checkpoint_sha256": checkpoint_sha256, "device": device,
                "threads": threads}
        return [f"{k}={getattr(self, k)!r} (expected {v!r})" for k, v in want.items()
                if v is not None and getattr(self, k) != v]

    def require_match(self, **expected: Any) -> None:
        """Raise TableError naming every mismatched field (see `mismatches`)."""
        bad = self.mismatches(**expected)
        if bad:
            raise TableError("ProfileTable does not match: " + "; ".join(bad) +
                             " - profile this model on this device (superserve profile)")

    # ----------------------------------------------------------------- the paper's properties
    def p1_violations(self, tolerance: float = 0.0) -> list[dict[str, Any]]:
        """P1: for every subnet, latency grows with batch size."""
        out = []
        for i, row in enumerate(self.lat_s):
            for j in range(1, len(row)):
                if row[j] < row[j - 1] * (1.0 - tolerance):
                    out.append({"subnet": i, "batch_sizes": [self.batch_sizes[j - 1],
                                self.batch_sizes[j]], "latency_ms": [row[j - 1] * 1e3,
                                row[j] * 1e3]})
        return out

    def p2_violations(self, tolerance: float = 0.0) -> list[dict[str, Any]]:
        """P2: along the frontier, at every batch size, higher accuracy costs more latency.

        A pair violates P2 when the more accurate subnet is strictly faster (it dominates)."""
        order = sorted(range(len(self)), key=lambda i: (self.acc[i], self.lat_s[i][0]))
        out = []
        for j, b in enumerate(self.batch_sizes):
            for k in range(1, len(order)):
                lo, hi = order[k - 1], order[k]
                if self.acc[hi] > self.acc[lo] and \
                        self.lat_s[hi][j] < self.lat_s[lo][j] * (1.0 - tolerance):
                    out.append({"batch_size": b, "subnets": [lo, hi],
                                "accuracy": [self.acc[lo], self.acc[hi]],
                                "latency_ms": [self.lat_s[lo][j] * 1e3, self.lat_s[hi][j] * 1e3]})
        return out

    def monotone(self) -> ProfileTable:
        """A copy whose latencies satisfy P1 and P2 exactly.

        Per batch size, latency is made non-decreasing in accuracy order by isotonic regression
        (pool-adjacent-violators, so noise is averaged, not clipped); then per subnet a running
        maximum over batch sizes enforces P1. The running maximum keeps the P2 order, since it
        is taken over rows that are already ordered column by column."""
        order = sorted(range(len(self)), key=lambda i: (self.acc[i], self.lat_s[i][0]))
        ncol = len(self.batch_sizes)
        fitted = [list(r) for r in self.lat_s]
        for j in range(ncol):
            ys = isotonic_increasing([self.lat_s[i][j] for i in order])
            for i, y in zip(order, ys):
                fitted[i][j] = y
        for row in fitted:
            for j in range(1, ncol):
                row[j] = max(row[j], row[j - 1])
        subnets = [replace(s, latency_ms={b: fitted[s.id][j] * 1e3
                                          for j, b in enumerate(self.batch_sizes)})
                   for s in self.subnets]
        prov = dict(self.provenance)
        prov["monotone_fit"] = True
        prov.setdefault("violations_before_monotone_fit", {"p1": len(self.p1_violations()),
                                                           "p2": len(self.p2_violations())})
        return ProfileTable.build(self.family, subnets, self.batch_sizes, device=self.device,
                                  threads=self.threads, checkpoint_sha256=self.checkpoint_sha256,
                                  torch_version=self.torch_version, config=self.config,
                                  provenance=prov, load_ms=self.load_ms)

    def cut(self, subnets: Sequence[int], batch_sizes: Sequence[int]) -> ProfileTable:
        """A copy with only these subnets (by index, renumbered in latency order) at only these
        of its batch sizes: a short warm-up where a test or a benchmark needs a real table."""
        missing = sorted(set(batch_sizes) - set(self.batch_sizes))
        if missing or not batch_sizes:
            raise TableError(f"batch sizes {missing or list(batch_sizes)} are not all in the "
                             f"table's {list(self.batch_sizes)}")
        if not subnets or any(not 0 <= i < len(self) for i in subnets):
            raise TableError(f"subnet indices must be in [0, {len(self)}), got {list(subnets)}")
        bs = sorted(set(batch_sizes))

        def only(m: Mapping[int, float]) -> dict[int, float]:
            return {b: m[b] for b in bs if b in m}

        keep = [replace(self.subnets[i], latency_ms=only(self.subnets[i].latency_ms),
                        latency_p99_ms=only(self.subnets[i].latency_p99_ms))
                for i in dict.fromkeys(subnets)]
        return ProfileTable.build(self.family, keep, bs, device=self.device,
                                  threads=self.threads, checkpoint_sha256=self.checkpoint_sha256,
                                  torch_version=self.torch_version, config=self.config,
                                  provenance=self.provenance, load_ms=self.load_ms)

    def scaled(self, factor: float) -> ProfileTable:
        """A copy with every latency (median, p99, load) multiplied by `factor`: a planning
        margin for a worker that shares its CPU, the same for the live server and the
        simulator so that both plan alike. Order and ids are kept, so a policy built on the
        copy names the same subnets as the original."""
        if not 0 < factor < 100:
            raise TableError(f"latency scale must be in (0, 100), got {factor!r}")

        def times(v: float | None) -> float | None:
            return None if v is None else v * factor

        subnets = tuple(replace(s, latency_ms={b: v * factor for b, v in s.latency_ms.items()},
                                latency_p99_ms={b: v * factor
                                                for b, v in s.latency_p99_ms.items()},
                                load_ms=times(s.load_ms))
                        for s in self.subnets)
        prov = {**self.provenance, "latency_scale": self.provenance.get("latency_scale", 1.0) * factor}
        return replace(self, subnets=subnets, provenance=prov, load_ms=times(self.load_ms))

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "family": self.family,
            "device": self.device,
            "threads": self.threads,
            "batch_sizes": list(self.batch_sizes),
            "checkpoint_sha256": self.checkpoint_sha256,
            "torch_version": self.torch_version,
            "load_ms": self.load_ms,
            "config": dict(self.config),
            "provenance": dict(self.provenance),
            "p1_violations": self.p1_violations(),
            "p2_violations": self.p2_violations(),
            "subnets": [s.to_dict() for s in self.subnets],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProfileTable:
        if not isinstance(d, Mapping):
            raise TableError(f"a ProfileTable must be a JSON object, got {type(d).__name__}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise TableError(f"unsupported ProfileTable schema_version={version!r}; "
                             f"this SuperServe reads version {SCHEMA_VERSION}")
        for key in ("family", "batch_sizes", "subnets"):
            if key not in d:
                raise TableError(f"ProfileTable lacks the required key {key!r}")
        try:
            subnets = tuple(
                SubnetProfile(
                    id=int(s["id"]), spec=dict(s["spec"]), accuracy=float(s["accuracy"]),
                    test_accuracy=None if s.get("test_accuracy") is None
                    else float(s["test_accuracy"]),
                    latency_ms={int(b): float(v) for b, v in s["latency_ms"].items()},
                    latency_p99_ms={int(b): float(v)
                                    for b, v in (s.get("latency_p99_ms") or {}).items()},
                    flops=int(s.get("flops", 0)), params=int(s.get("params", 0)),
                    load_ms=None if s.get("load_ms") is None else float(s["load_ms"]),
                    score=None if s.get("score") is None else float(s["score"]),
                    val_top1=None if s.get("val_top1") is None else float(s["val_top1"]),
                )
                for s in d["subnets"]
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TableError(f"malformed subnet entry in ProfileTable: {e!r}") from e
        return cls(
            family=str(d["family"]), subnets=subnets,
            batch_sizes=tuple(int(b) for b in d["batch_sizes"]),
            device=str(d.get("device", "cpu")), threads=int(d.get("threads", 1)),
            checkpoint_sha256=str(d.get("checkpoint_sha256", "")),
            torch_version=str(d.get("torch_version", "")),
            config=dict(d.get("config") or {}), provenance=dict(d.get("provenance") or {}),
            load_ms=None if d.get("load_ms") is None else float(d["load_ms"]),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ProfileTable:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError as e:
            raise TableError(f"no ProfileTable at {p}") from e
        except json.JSONDecodeError as e:
            raise TableError(f"{p} is not valid JSON: {e}") from e
        return cls.from_dict(d)


def isotonic_increasing(ys: Sequence[float]) -> list[float]:
    """Least-squares non-decreasing fit of `ys` (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for y in ys:
        blocks.append([float(y), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2 = blocks.pop()
            m1, w1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    out: list[float] = []
    for m, w in blocks:
        out.extend([m] * int(w))
    return out
