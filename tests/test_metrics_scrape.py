"""benchmarks/metrics_scrape.py's pieces: the scraper's timed keep-alive GETs against a real
server, and the loop-lag arithmetic on two /metrics texts."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import ServerThread, synthetic_table
from superserve.runtime.fake import FakePool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import metrics_scrape


def test_scrape_series_times_each_get():
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1))
    try:
        out = metrics_scrape.scrape_series(s.http, 0.02, 0.3)
    finally:
        s.close()
    assert out["errors"] == 0 and len(out["times_ms"]) >= 3
    assert all(t > 0 for t in out["times_ms"]) and out["bytes"] > 1000


def _text(buckets: dict[str, int], count: int) -> str:
    lines = [f'superserve_event_loop_lag_seconds_bucket{{le="{le}"}} {n}.0'
             for le, n in buckets.items()]
    return "\n".join([*lines, f"superserve_event_loop_lag_seconds_count {count}.0", ""])


def test_lag_delta_counts_the_samples_of_the_window():
    before = metrics_scrape._lag_counts(_text({"0.005": 10, "0.01": 10, "0.05": 10,
                                               "+Inf": 10}, 10))
    after = metrics_scrape._lag_counts(_text({"0.005": 15, "0.01": 17, "0.05": 19,
                                              "+Inf": 20}, 20))
    d = metrics_scrape._lag_delta(before, after)
    # 10 new samples: 5 under 5 ms, 2 in (5, 10], 2 in (10, 50], 1 over 50 ms
    assert d == {"samples": 10, "over_10ms": 3, "over_50ms": 1,
                 "worst_bucket_exceeded_ms": 50.0}
