"""`superserve bench soak` sizes its load on the live server's measured capacity (issue 15,
item 5): the capacity arithmetic, the /metrics gauges it reads, the ramp that sets the
capacity (fakes, no sockets), and one short live run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import synthetic_table
from superserve.bench import soak
from superserve.server.metrics import ServerMetrics


def test_capacity_at_the_planned_batch_cost():
    t = synthetic_table()  # fastest subnet: 1 ms + 0.25 ms x B, best at B = 16 (5 ms)
    assert soak._capacity_rps(t) == pytest.approx(16 / 0.005)
    # planned: 2 x profiled + 1 ms a batch -> 16 / 11 ms
    assert soak._capacity_rps(t, 2.0, 0.001) == pytest.approx(16 / 0.011)


def test_reads_the_calibration_gauges_the_server_renders():
    cal = SimpleNamespace(scale=1.1, overhead_s=0.0002, tail=1.0, reserve_s=0.003,
                          transport_s=0.0005, samples=40, last_predicted_s=0.004,
                          last_observed_s=0.0045, steps_detected=2)
    router = SimpleNamespace(calibration=cal, latency_scale=1.25, overhead_s=0.004,
                             response_tail_s=0.001, last_compute_s=0.003, probe_factor=None)
    m = ServerMetrics(lambda: 0.0, lambda: 1.0, router=router)
    g = soak._calibration(m.render().decode())
    assert g["plan_scale"] == pytest.approx(1.25)
    assert g["plan_overhead_seconds"] == pytest.approx(0.004)
    assert g["batches"] == 40
    assert g["steps"] == 2


def test_outcomes_by_terminal_status():
    out = soak._outcomes(Counter({200: 7, 504: 2, 429: 1, 503: 1, 400: 1, "TimeoutError": 3}))
    assert out == {"completed": 7, "dropped_deadline": 2, "rejected": 2, "failed": 1,
                   "lost": 3}


def _fake_server(monkeypatch, ok_below: float):
    """The probe's three seams faked: a closed loop at 1,000 images/s, a ramp step that gets
    all 200s up to `ok_below` images/s and 95% above, a planned capacity of 800."""
    sent_at: list[tuple[float, int]] = []

    async def closed_loop(base_url, table, images, slo_ms, duration_s):
        return 1000.0, Counter({200: 10})

    async def load(url, rate, duration_s, slo_ms, seed, statuses, lost, images=1):
        sent_at.append((rate * images, images))
        statuses[200] += 100 if rate * images <= ok_below else 95
        statuses[504] += 0 if rate * images <= ok_below else 5
        return 100

    async def planned(base_url, table):
        return 800.0

    monkeypatch.setattr(soak, "_closed_loop", closed_loop)
    monkeypatch.setattr(soak, "_load", load)
    monkeypatch.setattr(soak, "_planned", planned)
    return sent_at


def test_ramp_stops_at_the_first_step_under_99_percent(monkeypatch):
    sent_at = _fake_server(monkeypatch, ok_below=550.0)
    shape = lambda rate: max(1, int(rate // 100))  # images per request
    out = asyncio.run(soak._probe("http://127.0.0.1:1", synthetic_table(), shape, 100.0,
                                  2.0, 1.0, 0))
    assert [round(r) for r, _ in sent_at] == [200, 300, 400, 500, 600]  # 600 failed: stop
    assert [n for _, n in sent_at] == [2, 3, 4, 5, 6]  # the soak's request at each rate
    assert out["capacity"] == pytest.approx(500.0)
    assert out["closed_loop"] == 1000.0 and out["calibrated_after_ramp"] == 800.0
    assert [s["ok"] for s in out["ramp"]] == [1.0, 1.0, 1.0, 1.0, 0.95]


def test_no_step_passes_no_capacity(monkeypatch):
    _fake_server(monkeypatch, ok_below=0.0)
    out = asyncio.run(soak._probe("http://127.0.0.1:1", synthetic_table(), lambda r: 1,
                                  100.0, 2.0, 1.0, 0))
    assert out["capacity"] == 0.0 and len(out["ramp"]) == 1


def test_short_soak_runs_at_the_measured_capacity():
    proc = subprocess.run([sys.executable, "-m", "superserve.cli", "bench", "soak",
                           "--duration", "5", "--max-rate", "50", "--json"],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = json.loads(proc.stdout)
    assert "measured" in proc.stderr and "nominal" in proc.stderr
    assert Path(rep["samples_csv"]).read_text().startswith("t_s,router_rss")
    for key in ("rss_growth_after_warmup", "fd_growth", "requests", "lost", "outcomes",
                "capacity_nominal", "capacity_measured", "capacity_probe"):
        assert key in rep
    assert 0 < rep["capacity_measured"] < rep["capacity_nominal"]
    assert rep["capacity_measured"] == rep["capacity_probe"]["capacity"]
    assert rep["image_rate"] == pytest.approx(0.7 * rep["capacity_measured"], rel=0.01)
    assert rep["lost"] == 0 and sum(rep["outcomes"].values()) == rep["requests"]
    assert rep["outcomes"]["completed"] >= 0.8 * rep["requests"]  # at 70%: mostly 200
