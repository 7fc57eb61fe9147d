"""A realistic stand-in ProfileTable: OFA-ResNet-like accuracy/latency shape, no model needed.

Latency(subnet, b) = fixed_s + per_item_s * b^0.9 (sublinear batching), with per-subnet cost
rising geometrically from the smallest to the largest subnet and accuracy rising concavely.
"""

from __future__ import annotations

from superserve.profiling.table import ProfileTable, SubnetProfile

__all__ = ["synthetic_table"]


def synthetic_table(n: int = 40, acc_lo: float = 0.90, acc_hi: float = 0.985,
                    lat1_lo_ms: float = 0.5, lat1_hi_ms: float = 3.5,
                    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
                    load_ms: float = 20.0) -> ProfileTable:
    subnets = []
    for i in range(n):
        f = i / max(1, n - 1)
        lat1 = lat1_lo_ms * (lat1_hi_ms / lat1_lo_ms) ** f
        fixed = 0.3 * lat1
        per_item = lat1 - fixed
        acc = acc_lo + (acc_hi - acc_lo) * (1 - (1 - f) ** 2)
        subnets.append(SubnetProfile(
            id=i, spec={"synthetic": i}, accuracy=round(acc, 5), test_accuracy=round(acc, 5),
            latency_ms={b: fixed + per_item * b ** 0.9 for b in batch_sizes},
            flops=int(1e6 * lat1), params=int(1e4 * lat1), load_ms=load_ms))
    return ProfileTable.build("synthetic", subnets, batch_sizes, device="synthetic", threads=1,
                              load_ms=load_ms, provenance={"synthetic": True})
