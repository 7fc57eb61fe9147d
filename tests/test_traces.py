"""Trace specs: statistics match the spec, seeds make them deterministic, files round-trip,
the Azure loaders read their formats, and malformed specs name the bad key or value."""

from __future__ import annotations

import json

import numpy as np
import pytest

from superserve.cli import main
from superserve.errors import TraceSpecError
from superserve.traces import load_trace, parse_spec, trace_stats
from superserve.traces.spec import azure_functions_counts, azure_llm_arrivals


def test_poisson_rate_and_cv2():
    s = load_trace("poisson:rate=2000,duration=30,seed=3").stats()
    assert s["mean_rate"] == pytest.approx(2000, rel=0.02)
    assert s["cv2"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("cv2", [2.0, 4.0, 8.0])
def test_bursty_gamma_stream_has_the_spec_cv2(cv2):
    # with no deterministic base the stream is the gamma renewal process itself
    s = load_trace(f"bursty:base=0,variant=3000,cv2={cv2},duration=60,seed=1").stats()
    assert s["mean_rate"] == pytest.approx(3000, rel=0.08)
    assert s["cv2"] == pytest.approx(cv2, rel=0.15)


def test_bursty_base_plus_variant():
    t = load_trace("bursty:base=1000,variant=500,cv2=4,duration=60,seed=2")
    s = t.stats()
    assert s["mean_rate"] == pytest.approx(1500, rel=0.05)
    # merged with the deterministic base, gaps are more regular than Poisson (CV^2 < 1), but
    # counts over windows keep the gamma stream's burstiness: variance ~ cv2 x its rate
    assert s["cv2"] < 1.0
    counts = np.bincount((t.arrivals_s / 0.1).astype(int), minlength=600)
    assert counts.var() == pytest.approx(4 * 50, rel=0.3)
    assert np.all(np.diff(t.arrivals_s) >= 0) and t.arrivals_s[-1] < 60


def test_timevarying_flat_and_ramp():
    flat = load_trace("timevarying:start=1000,end=1000,accel=1,cv2=2,duration=40,seed=0").stats()
    assert flat["mean_rate"] == pytest.approx(1000, rel=0.05)
    assert flat["cv2"] == pytest.approx(2.0, rel=0.15)
    # 500 -> 2500 q/s at 200 q/s^2: a 10 s ramp, then 2,500 q/s held for 10 s
    t = load_trace("timevarying:start=500,end=2500,accel=200,cv2=1,duration=20,seed=0")
    per_s = np.bincount(t.arrivals_s.astype(int), minlength=20)
    assert per_s[0] == pytest.approx(600, rel=0.15)  # mean rate over [0, 1) is 600
    assert per_s[5] == pytest.approx(1600, rel=0.1)
    assert per_s[12:].mean() == pytest.approx(2500, rel=0.05)
    assert len(t) == pytest.approx(15000 + 25000, rel=0.03)  # integral of the rate
    down = load_trace("timevarying:start=2500,end=500,accel=200,cv2=1,duration=20,seed=0")
    assert len(down) == pytest.approx(15000 + 5000, rel=0.03)


def test_maf_mean_rate_and_per_minute_burstiness():
    t = load_trace("maf:mean=3000,duration=60,functions=100,seed=0")
    assert t.stats()["mean_rate"] == pytest.approx(3000, rel=0.1)
    # per compressed "minute" (60 s / 1440), counts vary far more than Poisson's
    counts = np.bincount((t.arrivals_s / (60 / 1440)).astype(int), minlength=1440)
    assert counts.var() / counts.mean() > 5.0
    # but the aggregate stays like Azure's: a daily cycle with bursts, no 10x minutes
    assert 0.2 < counts.std() / counts.mean() < 0.5
    assert counts.max() < 3 * counts.mean()


def test_azure_llm_replay_rescaled_to_rate_and_duration():
    raw = azure_llm_arrivals("code")
    assert len(raw) == 8819 and raw[0] == 0 and np.all(np.diff(raw) >= 0)
    t = load_trace("azure-llm:name=code,rate=500,duration=30")
    assert t.arrivals_s.max() < 30
    assert t.stats()["mean_rate"] == pytest.approx(500, rel=0.1)
    conv = load_trace("azure-llm:name=conv,rate=500,duration=30").stats()
    assert t.stats()["cv2"] > 3 * conv["cv2"]  # the code trace is the bursty one


def test_seeds_make_traces_deterministic():
    for spec in ("bursty:base=100,variant=200,cv2=4,duration=5",
                 "timevarying:start=100,end=300,accel=50,cv2=2,duration=5",
                 "maf:mean=200,duration=5,functions=20", "poisson:rate=100,duration=5"):
        a, b = load_trace(spec + ",seed=7"), load_trace(spec + ",seed=7")
        assert np.array_equal(a.arrivals_s, b.arrivals_s), spec
        assert not np.array_equal(a.arrivals_s, load_trace(spec + ",seed=8").arrivals_s), spec


def test_trace_file_round_trip(tmp_path):
    t = load_trace("bursty:base=100,variant=100,cv2=2,duration=3,seed=1")
    path = tmp_path / "t.trace"
    t.save(path)
    back = load_trace(str(path))
    assert np.allclose(back.arrivals_s, t.arrivals_s, atol=1e-9)
    assert back.duration_s == 3.0 and back.spec == t.spec
    (tmp_path / "bad.txt").write_text("1.0\n2.0\n")
    with pytest.raises(TraceSpecError, match="not a superserve trace file"):
        load_trace(str(tmp_path / "bad.txt"))


def _write_functions_csv(path, rows):
    header = ["HashOwner", "HashApp", "HashFunction", "Trigger"] + [str(m) for m in range(1, 6)]
    lines = [",".join(header)] + [",".join(["o", "a", f"f{k}", "http"] + [str(v) for v in r])
                                  for k, r in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")


def test_azure_functions_loader(tmp_path):
    path = tmp_path / "invocations_per_function_md.anon.d01.csv"
    _write_functions_csv(path, [[1, 0, 4, 0, 2], [2, 3, 0, 0, 1]])
    assert azure_functions_counts(path).tolist() == [3, 3, 4, 0, 3]
    # without a rate: exactly those counts, each compressed minute lasting 10 / 5 = 2 s
    t = load_trace(f"azure-functions:path={path},duration=10")
    assert np.bincount((t.arrivals_s / 2).astype(int), minlength=5).tolist() == [3, 3, 4, 0, 3]
    scaled = load_trace(f"azure-functions:path={path},duration=10,rate=100,seed=1")
    assert scaled.stats()["mean_rate"] == pytest.approx(100, rel=0.15)
    assert np.count_nonzero((scaled.arrivals_s >= 6) & (scaled.arrivals_s < 8)) == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(TraceSpecError, match="HashFunction"):
        azure_functions_counts(bad)
    with pytest.raises(TraceSpecError, match="no Azure Functions trace file"):
        azure_functions_counts(tmp_path / "missing.csv")


@pytest.mark.parametrize("spec,msg", [
    ("gamma:rate=1", "unknown trace kind 'gamma'"),
    ("poisson:rate=10", "missing duration"),
    ("poisson:rate=10,duration=5,burst=3", "unknown key 'burst'"),
    ("poisson:rate=ten,duration=5", "bad value rate='ten'"),
    ("poisson:rate=-1,duration=5", "rate=-1.0 must be >= 0"),
    ("poisson:rate=10,duration=0", "duration=0.0 must be > 0"),
    ("poisson:rate=10,duration", "expected key=value"),
    ("bursty:base=10,variant=10,cv2=0,duration=5", "cv2=0.0 must be > 0"),
    ("bursty:base=0,variant=0,cv2=1,duration=5", "base \\+ variant"),
    ("timevarying:start=10,end=20,accel=0,cv2=1,duration=5", "accel must be > 0"),
    ("azure-llm:name=chat,rate=10,duration=5", "name='chat'"),
    ("maf:mean=10,duration=5,seed=x", "bad value seed='x'"),
    ("no/such/file.trace", "neither a trace spec"),
])
def test_malformed_specs_name_the_problem(spec, msg):
    with pytest.raises(TraceSpecError, match=msg):
        load_trace(spec)


def test_parse_spec_types_and_default_seed():
    kind, p = parse_spec("maf:mean=5,duration=2,functions=3")
    assert kind == "maf" and p == {"mean": 5.0, "duration": 2.0, "functions": 3}


def test_trace_stats_on_known_arrivals():
    s = trace_stats(np.array([0.1, 0.2, 0.3, 1.5]), 2.0)
    assert s["requests"] == 4 and s["mean_rate"] == 2.0 and s["peak_per_s"] == 3


def test_trace_show_cli(tmp_path, capsys):
    png = tmp_path / "rate.png"
    assert main(["trace", "show", "poisson:rate=300,duration=4", "--plot", str(png),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["requests"] > 0 and {"mean_rate", "cv2", "peak_per_s"} <= set(out)
    assert png.stat().st_size > 1000
    assert main(["trace", "show", "poisson:rate=3,duration=x"]) == 2
    assert "bad value duration='x'" in capsys.readouterr().err


def test_attainment_bound_of_a_clump_is_what_the_slo_window_holds():
    """n requests at once, a server answering one every 1/rate s: the first floor(SLO x rate)
    make it, whatever the policy."""
    from superserve.traces.bounds import attainment_bound

    clump = [0.0] * 100
    assert attainment_bound(clump, 1000.0, 0.050) == pytest.approx(0.50)
    assert attainment_bound(clump, 2000.0, 0.050) == 1.0
    assert attainment_bound(clump, 10.0, 0.050) == 0.0  # each takes 100 ms
    assert attainment_bound([], 10.0, 0.050) == 1.0
    with pytest.raises(ValueError, match="rate_qps"):
        attainment_bound(clump, 0.0, 0.050)


def test_attainment_bound_is_monotone_and_the_needed_rate_reaches_the_target():
    from superserve.traces.bounds import attainment_bound, rate_needed

    a = load_trace("bursty:base=300,variant=300,cv2=8,duration=5").arrivals_s.tolist()
    rates = [200.0, 400.0, 600.0, 800.0, 1200.0, 2400.0]
    bounds = [attainment_bound(a, r, 0.050) for r in rates]
    assert bounds == sorted(bounds) and bounds[0] < 0.5 and bounds[-1] > 0.99
    need = rate_needed(a, 0.050, 0.99)
    assert attainment_bound(a, need, 0.050) >= 0.99 > attainment_bound(a, need * 0.98, 0.050)
    # steady traffic at 300 req/s: 0.99 needs about 300 a second, no more than one SLO's worth
    steady = load_trace("poisson:rate=300,duration=5").arrivals_s.tolist()
    assert 250 < rate_needed(steady, 0.050, 0.99) < 600


def test_trace_show_prints_what_the_trace_asks_of_a_server(capsys):
    assert main(["trace", "show", "poisson:rate=300,duration=4", "--slo-ms", "50",
                 "--service-rate", "100", "5000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rate_needed_0.9"] <= out["rate_needed_0.99"] <= out["rate_needed_0.999"]
    assert out["bound_at_100"] < 0.5 and out["bound_at_5000"] == 1.0
    with pytest.raises(SystemExit, match="needs --slo-ms"):
        main(["trace", "show", "poisson:rate=3,duration=4", "--service-rate", "100"])
