"""The demo pipeline on a tiny live run (profile workers, a synthetic table): summary.json's
shape, progress lines when the output is not a terminal, the trace's shape, and the
tradeoff plot's label placement."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from superserve.bench.live import place_labels
from superserve.bench.loadgen import RequestRecord
from superserve.bench.timeline import LiveProgress, bin_records
from superserve.cli import main
from superserve.experiments.demo import demo_trace
from superserve.sim.synthetic import synthetic_table


def test_demo_tiny_run_writes_summary_plots_and_progress(tmp_path, capsys):
    table = tmp_path / "t.json"
    synthetic_table(n=6).save(table)
    out = tmp_path / "demo"
    assert main(["demo", "--table", str(table), "--worker-kind", "profile", "--no-pin",
                 "--phase-s", "0.5", "--burst-rate", "300", "--out", str(out),
                 "--policies", "slackfit,clipper:5"]) == 0
    cap = capsys.readouterr()
    doc = json.loads((out / "summary.json").read_text())
    assert set(doc["policies"]) == {"slackfit", "clipper-" + f"{100 * synthetic_table(n=6).acc[5]:.2f}"}
    for p in doc["policies"].values():
        assert {"slo_attainment", "mean_accuracy", "profiled_accuracy", "requests",
                "outcomes"} <= set(p)
        assert 0 <= p["slo_attainment"] <= 1 and 0 <= p["mean_accuracy"] <= 1
        assert p["requests"] == sum(p["outcomes"].values()) == doc["requests_per_run"]
    # the batches of the timed run by the rule that planned them (superserve_plans_total)
    from superserve.scheduling.policies import SLACKFIT_RULES

    sf, fixed = doc["policies"]["slackfit"]["plans"], next(
        p["plans"] for name, p in doc["policies"].items() if name != "slackfit")
    assert sf and set(sf) <= set(SLACKFIT_RULES) and all(v > 0 for v in sf.values())
    assert list(fixed) == ["clipper:5"] and fixed["clipper:5"] > 0
    assert "SlackFit's batches by the rule that planned them" in cap.out
    for name in ("timeline.png", "tradeoff.png", "slackfit.timeline.png"):
        assert (out / name).stat().st_size > 1000
    # stderr is not a terminal here: plain progress lines, one per run at least
    lines = [ln for ln in cap.err.splitlines() if "attainment so far" in ln]
    assert any(ln.startswith("slackfit") for ln in lines)
    assert all("offered" in ln and "subnet accuracy now" in ln for ln in lines)
    assert "realized" in cap.out and "calm phases vs bursts" in cap.out
    # the worker's CPU was looked at, and the header says what was seen
    assert {"stalls_per_s", "swing", "steady"} <= set(doc["worker_cpu_noise"])
    assert "the worker's CPU" in cap.out


def test_progress_prints_plain_lines_when_not_a_tty():
    buf = io.StringIO()
    p = LiveProgress("slackfit", np.linspace(0, 1, 5), file=buf, every_s=0.0)
    for i in range(5):
        p(RequestRecord(index=i, scheduled_s=i / 4, outcome="completed", deadline_met=i != 2,
                        subnet_accuracy=0.97))
    out = buf.getvalue().splitlines()
    assert len(out) == 5 and "\r" not in buf.getvalue()
    assert "attainment so far 0.800" in out[-1] and "97.00%" in out[-1]


def test_demo_trace_goes_well_past_the_most_accurate_capacity():
    table = synthetic_table(n=6)
    tr = demo_trace(table, 0.05, phase_s=2.0, cap_qps=1e9)
    rates = [r for _, _, r in tr.phases]
    assert rates[0] == min(rates) < tr.capacity_qps < max(rates) == tr.peak_qps
    assert tr.peak_qps >= 3 * tr.capacity_qps
    b = bin_records([RequestRecord(index=i, scheduled_s=t) for i, t in
                     enumerate(tr.arrivals_s)], 1.0)
    assert b["offered_qps"].max() > 2 * tr.capacity_qps
    capped = demo_trace(table, 0.05, phase_s=2.0, cap_qps=100.0)
    assert capped.peak_qps == 100.0


def test_demo_trace_on_a_slower_machine_is_sized_from_its_latencies():
    table = synthetic_table(n=6)
    base = demo_trace(table, 0.05, phase_s=2.0, cap_qps=900.0)
    slow = demo_trace(table, 0.05, phase_s=2.0, cap_qps=900.0, speed=3.0)
    # x3 latencies: no batch size is more productive than before, and fewer fit SLO/2
    assert slow.capacity_qps <= base.capacity_qps / 3 * (1 + 1e-9)
    assert slow.speed == 3.0 and slow.peak_qps <= 900.0 / 3
    assert slow.phases[0][2] == pytest.approx(0.5 * slow.capacity_qps)
    assert len(slow.arrivals_s) < len(base.arrivals_s) / 2
    fast = demo_trace(table, 0.05, phase_s=2.0, cap_qps=1e9, speed=0.5)
    assert fast.capacity_qps >= 2 * base.capacity_qps * (1 - 1e-9)
    with pytest.raises(ValueError, match="speed"):
        demo_trace(table, 0.05, phase_s=2.0, speed=0.0)


def test_machine_speed_times_on_the_worker_cpu_and_gives_this_process_its_cpus_back():
    import os

    from superserve.experiments.demo import machine_speed
    from superserve.profiling import default_table_path
    from superserve.profiling.table import ProfileTable

    path = default_table_path("resnet")
    table = ProfileTable.load(path)
    before = os.sched_getaffinity(0)
    cpu = max(before)
    factor, probes = machine_speed(table, str(path), 0.05, cpu)
    assert os.sched_getaffinity(0) == before
    assert factor > 0 and len(probes) >= 2
    assert {b for _, b, _ in probes} >= {1}  # batch 1 and the best batch of each subnet


def test_noise_note_says_whether_the_worker_cpu_was_steady():
    from superserve.experiments.demo import noise_note
    from superserve.profiling.noise import summarize

    starts = [i * 1e-3 for i in range(2000)]
    steady = noise_note(summarize(starts, [1.0] * 2000))
    assert "held steady" in steady and "NOT" not in steady
    units = [1.0] * 2000
    units[500] = 41.0
    noisy = noise_note(summarize(starts, units))
    assert "NOT steady" in noisy and "longest 40 ms" in noisy and "SlackFit" in noisy


def test_place_labels_keeps_crowded_labels_apart():
    pts = [(100.0, 100.0), (102.0, 101.0), (104.0, 99.0), (101.0, 103.0), (300.0, 50.0)]
    sizes = [(60.0, 12.0)] * len(pts)
    offs = place_labels(pts, sizes, bounds=(0, 0, 400, 300))
    boxes = [(x + dx - w / 2, y + dy - h / 2, x + dx + w / 2, y + dy + h / 2)
             for (x, y), (dx, dy), (w, h) in zip(pts, offs, sizes)]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            apart = a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
            assert apart, (i, j, a, b)
        assert all(math.isfinite(v) for v in boxes[i])


def test_progress_rewrites_one_line_on_a_terminal():
    buf = io.StringIO()
    p = LiveProgress("clipper-0", np.linspace(0, 1, 3), file=buf, tty=True)
    for i in range(3):
        p(RequestRecord(index=i, scheduled_s=i / 2, sent_s=i / 2, latency_ms=1.0,
                        outcome="completed", deadline_met=True, subnet_accuracy=0.95))
    p.close()
    text = buf.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
