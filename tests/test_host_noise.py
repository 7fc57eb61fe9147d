"""The host-noise probe (profiling/noise.py): its figures from known timings, and its loop on
a fake clock."""

from __future__ import annotations

import itertools

import pytest

from superserve.profiling.noise import measure_host_noise, summarize


def _even(n: int, unit_ms: float) -> tuple[list[float], list[float]]:
    starts = [i * unit_ms / 1e3 for i in range(n)]
    return starts, [unit_ms] * n


def test_a_steady_cpu_has_no_stalls_and_no_swing():
    starts, units = _even(2000, 1.0)  # 2 s of 1 ms units
    n = summarize(starts, units)
    assert n.units == 2000 and n.seconds == pytest.approx(2.0)
    assert n.unit_ms_p50 == 1.0 and n.p99_over_p50 == 1.0
    assert n.stalls_per_s == 0 and n.longest_stall_ms == 0 and n.swing == 1.0
    assert n.steady()


def test_units_the_cpu_was_taken_from_count_as_stalls():
    starts, units = _even(2000, 1.0)
    units[100] = 31.0  # gone for 30 ms
    units[900] = 9.0  # 8 ms beyond the median: noise, not a stall
    units[1500] = 12.0
    n = summarize(starts, units)
    assert n.stalls_per_s == pytest.approx(2 / n.seconds)
    assert n.longest_stall_ms == pytest.approx(30.0)
    assert not n.steady()
    d = n.to_dict()  # what profile --speed, the demo and calibration_live report
    assert d["steady"] is False and d["longest_stall_ms"] == 30.0 and d["units"] == 2000
    assert d["stalls_per_s"] == round(n.stalls_per_s, 3)
    assert summarize(*_even(2000, 1.0)).to_dict()["steady"] is True


def test_a_speed_that_moves_between_windows_is_a_swing():
    starts, units = _even(1000, 1.0)  # first second at 1 ms a unit
    t = starts[-1] + 1e-3
    for i in range(500):  # then a second at 2 ms a unit
        starts.append(t + i * 2e-3)
        units.append(2.0)
    n = summarize(starts, units)
    assert n.swing == pytest.approx(2.0)
    assert n.stalls_per_s == 0 and not n.steady()


def test_summarize_refuses_mismatched_or_empty_timings():
    with pytest.raises(ValueError):
        summarize([], [])
    with pytest.raises(ValueError):
        summarize([0.0], [1.0, 2.0])


def test_the_probe_runs_on_the_cpu_it_is_given_and_gives_the_thread_its_cpus_back():
    import os

    before = os.sched_getaffinity(0)
    seen = []
    n = measure_host_noise(0.1, cpu=max(before), unit=lambda: seen.append(os.sched_getaffinity(0)))
    assert os.sched_getaffinity(0) == before
    assert n.units > 0 and all(s == {max(before)} for s in seen)


def test_the_probe_runs_units_until_its_time_is_up_on_a_fake_clock():
    ticks = itertools.count()
    clock = lambda: next(ticks) * 1e-3  # every read moves 1 ms
    calls = []
    n = measure_host_noise(0.1, unit=lambda: calls.append(1), clock=clock)
    # each unit: one read at its start, one at its end (the 1 ms it took), and the warm-up
    assert n.units == len(calls) - 1 > 0
    assert n.unit_ms_p50 == pytest.approx(1.0) and n.stalls_per_s == 0
    with pytest.raises(ValueError):
        measure_host_noise(0)
