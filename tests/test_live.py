"""The load generator and the live-experiment harness against a real `superserve serve`
process (profile-driven workers: no model compute), over HTTP and gRPC."""

import asyncio
import os
import signal
import time

import numpy as np
import pytest

from superserve.bench.live import LiveRun, compare
from superserve.bench.loadgen import LoadgenConfig, run_loadgen, summarize
from superserve.bench.server_proc import ServerProcess
from superserve.sim.synthetic import synthetic_table


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "synthetic.json"
    synthetic_table(n=8).save(path)
    return path


def server_args(table_path, policy="slackfit", workers=1):
    return ["--table", str(table_path), "--worker-kind", "profile", "--policy", policy,
            "--workers", str(workers)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_loadgen_against_live_server(tmp_path, table_path, protocol):
    x = np.random.default_rng(0).random((20, 1, 28, 28), dtype=np.float32)
    y = np.zeros(20, np.int64)
    with ServerProcess(server_args(table_path), tmp_path / "server.log") as srv:
        url = srv.http_url if protocol == "http" else srv.grpc_url
        cfg = LoadgenConfig(url=url, slo_ms=100, protocol=protocol, timeout_s=10)
        arrivals = np.linspace(0, 1.5, 60)
        recs = asyncio.run(run_loadgen(cfg, arrivals, x, y))
    s = summarize(recs, 100)
    assert s["requests"] == 60 and sum(s["outcomes"].values()) == 60
    assert s["outcomes"]["completed"] == 60, s
    assert s["slo_attainment"] > 0.9
    assert all(0 <= r.subnet_id < 8 and r.batch_size >= 1 for r in recs)
    # the profile worker's logits point at the subnet id: prediction == subnet id % 10
    assert all(r.predicted == r.subnet_id % 10 for r in recs)


def test_killed_worker_under_load_leaves_no_request_unanswered(tmp_path, table_path):
    x = np.zeros((4, 1, 28, 28), np.float32)
    y = np.zeros(4, np.int64)
    with ServerProcess(server_args(table_path, workers=2), tmp_path / "s.log") as srv:
        cfg = LoadgenConfig(url=srv.http_url, slo_ms=200, timeout_s=10)

        async def body():
            task = asyncio.create_task(run_loadgen(cfg, np.linspace(0, 2.0, 200), x, y))
            await asyncio.sleep(0.7)
            pids = srv.worker_pids()
            assert len(pids) >= 2
            os.kill(pids[0], signal.SIGKILL)
            return await task

        recs = asyncio.run(body())
    s = summarize(recs, 200)
    assert sum(s["outcomes"].values()) == 200
    assert s["outcomes"]["failed"] == 0  # re-queued or answered, never lost or broken
    assert s["outcomes"]["completed"] >= 190


def test_compare_writes_summary_and_plots(tmp_path, table_path):
    runs = [LiveRun("slackfit", "slackfit"), LiveRun("clipper-0", "clipper:0")]
    t0 = time.perf_counter()
    results = compare(runs, np.linspace(0, 1.0, 30), 100.0, tmp_path,
                      common_args=["--table", str(table_path), "--worker-kind", "profile"])
    assert time.perf_counter() - t0 < 120
    assert [r.summary["requests"] for r in results] == [30, 30]
    for name in ("summary.csv", "tradeoff.png", "slackfit.timeseries.png",
                 "clipper-0.requests.csv"):
        assert (tmp_path / name).stat().st_size > 0


def _bench(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_independent_open_loop_client_reports_every_request(tmp_path, table_path, capsys):
    import json

    client = _bench("open_loop_client")
    out = tmp_path / "r.json"
    with ServerProcess(server_args(table_path), tmp_path / "s.log") as srv:
        assert client.main(["--url", srv.http_url, "--trace",
                            "poisson:rate=100,duration=1.5", "--slo-ms", "200", "--warmup", "5",
                            "--out", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep == json.loads(out.read_text())
    assert rep["requests"] == sum(rep["outcomes"].values()) > 100
    assert rep["outcomes"].get("200") == rep["requests"] and rep["slo_attainment"] > 0.9
    assert 0 < rep["profiled_accuracy"] <= 1 and rep["latency_ms_p99"] is not None
    assert sum(t["requests"] for t in rep["timeline"]) == rep["requests"]


def test_open_loop_client_paces_its_warm_up(tmp_path):
    """The warm-up requests go 20 ms apart, not all at once (a clump at the start that the
    server's burst guard remembers into the timed run), then the burst of --warmup-burst."""
    import itertools
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[float] = []
    reply = json.dumps({"outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10],
                                     "data": [0.0] * 10}],
                        "parameters": {"subnet_accuracy": 0.9}}).encode()

    class Stub(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(time.perf_counter())
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        client = _bench("open_loop_client")
        assert client.main(["--url", f"http://127.0.0.1:{srv.server_port}", "--trace",
                            "poisson:rate=50,duration=0.2", "--warmup", "10",
                            "--warmup-burst", "0", "--out", str(tmp_path / "r.json")]) == 0
    finally:
        srv.shutdown()
    warm = seen[:10]
    assert len(seen) > 10
    # 20 ms apart, none at once; judged on the span and the median gap, since a stub thread
    # woken late shortens the one gap after it (CI saw 8.6 ms between two of them)
    gaps = sorted(b - a for a, b in itertools.pairwise(warm))
    assert warm[-1] - warm[0] >= 9 * 0.020 * 0.75
    assert gaps[len(gaps) // 2] >= 0.015


def test_calibration_live_server_attainment_is_over_the_timed_run():
    cal = _bench("calibration_live")
    before = {'superserve_requests_total{outcome="completed"}': 10.0,
              "superserve_requests_deadline_met_total": 10.0}
    after = {'superserve_requests_total{outcome="completed"}': 100.0,
             'superserve_requests_total{outcome="dropped_deadline"}': 10.0,
             "superserve_requests_deadline_met_total": 91.0}
    assert cal.server_attainment(before, after) == pytest.approx(81 / 100)
    tl = [{"t_s": s, "requests": 10, "met": 10 if s < 5 else 5} for s in range(10)]
    assert cal.last_attainment(tl, 5) == pytest.approx(0.5)
    assert cal.trace_spec("azure-code", 1000, 20, 0).startswith("azure-llm:name=code,rate=1000")


def test_calibration_live_counts_batches_by_planning_rule_over_the_timed_run(capsys):
    """The rule counts are the deltas of superserve_plans_total over the timed run, largest
    first (none: left out), and the row prints their shares."""
    cal = _bench("calibration_live")
    before = {'superserve_plans_total{rule="bucket"}': 5.0,
              'superserve_plans_total{rule="rate"}': 2.0}
    after = {'superserve_plans_total{rule="bucket"}': 35.0,
             'superserve_plans_total{rule="rate"}': 2.0,
             'superserve_plans_total{rule="front"}': 10.0, "superserve_queue_depth": 3.0}
    text = ('# HELP superserve_plans_total Dispatched batches\n'
            'superserve_plans_total{rule="bucket"} 35.0\nsuperserve_queue_depth 3.0\n'
            'process_cpu_seconds_total 1.5\n')
    assert cal.parse_metrics(text) == {'superserve_plans_total{rule="bucket"}': 35.0,
                                       "superserve_queue_depth": 3.0}
    rules = cal.plan_rules(before, after)
    assert rules == {"bucket": 30, "front": 10} and list(rules) == ["bucket", "front"]
    row = {"policy": "slackfit", "rate": 500.0, "slo_attainment": 0.97,
           "server_slo_attainment": None, "profiled_accuracy": 0.97, "realized_accuracy": 0.97,
           "latency_ms_p99": 60.0, "max_send_lag_ms": 3.0, "outcomes": {"200": 10},
           "batch_ratio_observed_over_planned": {"p50": 0.5, "p99": 1.1, "batches": 40},
           "calibration": {}, "plan_rules": rules}
    cal.print_row(row)
    assert "batches by planning rule: bucket 75.0%, front 25.0% (40 batches)" in \
        capsys.readouterr().out


def test_calibration_live_passes_client_args_to_the_load_generator(tmp_path):
    """--client-args reaches `superserve loadgen` (binary, grpc) and the JSON client, split
    like a shell would."""
    import types

    cal = _bench("calibration_live")
    srv = types.SimpleNamespace(url="http://127.0.0.1:1", grpc=2)
    args = cal.parse_args(["--protocol", "grpc", "--client-args=--grpc-deadline timeout"])
    cmd = cal.client_cmd(args, srv, "poisson:rate=1,duration=1", tmp_path / "c.json", tmp_path)
    assert cmd[cmd.index("--url") + 1] == "127.0.0.1:2"
    assert cmd[-2:] == ["--grpc-deadline", "timeout"]
    assert "--grpc-deadline" not in cal.client_cmd(cal.parse_args(["--protocol", "grpc"]), srv,
                                                   "poisson:rate=1,duration=1",
                                                   tmp_path / "c.json", tmp_path)
    # and the JSON client (open_loop_client.py)
    args = cal.parse_args(["--protocol", "json", "--client-args=--warmup-burst 64"])
    cmd = cal.client_cmd(args, srv, "poisson:rate=1,duration=1", tmp_path / "c.json", tmp_path)
    assert cmd[-2:] == ["--warmup-burst", "64"] and cmd[4].endswith("open_loop_client.py")


def test_calibration_live_reports_how_steady_the_worker_cpu_was(capsys):
    """Each cell's row carries the host-noise probe taken on CPU 1 before its server started,
    and its printout says it; a negative probe length is refused."""
    cal = _bench("calibration_live")
    assert cal.parse_args([]).noise_s == 3.0
    with pytest.raises(SystemExit):
        cal.parse_args(["--noise-s", "-1"])
    row = {"policy": "slackfit", "rate": 500.0, "slo_attainment": 0.97,
           "server_slo_attainment": 0.98, "profiled_accuracy": 0.97, "realized_accuracy": 0.97,
           "latency_ms_p99": 60.0, "max_send_lag_ms": 3.0, "outcomes": {"200": 10},
           "batch_ratio_observed_over_planned": {"p50": 0.5, "p99": 1.1, "batches": 10},
           "calibration": {},
           "worker_cpu_noise": {"stalls_per_s": 2.0, "stall_ms": 10.0, "longest_stall_ms": 31.2,
                                "swing": 1.4, "seconds": 1.0, "steady": False}}
    cal.print_row(row)
    out = capsys.readouterr().out
    assert "CPU 1 just before: NOT steady, 2.0 stalls/s (>= 10 ms, longest 31 ms), swing x1.40" \
        in out


def test_calibration_live_repetitions_interleave_policies_and_summarize(capsys):
    """--reps runs the policies of a rate back to back in every repetition, and the summary
    gives each cell's mean and range and its paired difference to the first policy."""
    cal = _bench("calibration_live")
    assert cal.parse_args([]).reps == 1
    with pytest.raises(SystemExit):
        cal.parse_args(["--reps", "0"])
    assert cal.cells(["clipper:0", "slackfit"], [250.0, 500.0], 2) == [
        (0, 250.0, "clipper:0"), (0, 250.0, "slackfit"),
        (0, 500.0, "clipper:0"), (0, 500.0, "slackfit"),
        (1, 250.0, "clipper:0"), (1, 250.0, "slackfit"),
        (1, 500.0, "clipper:0"), (1, 500.0, "slackfit")]

    def row(policy, rep, att, acc, server=None):
        return {"policy": policy, "rate": 250.0, "rep": rep, "slo_attainment": att,
                "server_slo_attainment": server, "profiled_accuracy": acc,
                "realized_accuracy": acc + 0.01}

    rows = [row("clipper:0", 0, 0.99, 0.9487, 0.995), row("slackfit", 0, 0.97, 0.97, 0.98),
            row("clipper:0", 1, 0.98, 0.9487, 0.985), row("slackfit", 1, 0.99, 0.96, None)]
    base, sf = cal.summarize_rows(rows)
    assert base["policy"] == "clipper:0" and base["runs"] == 2 and "paired" not in base
    assert base["slo_attainment"] == pytest.approx({"mean": 0.985, "min": 0.98, "max": 0.99})
    assert base["server_slo_attainment"]["mean"] == pytest.approx(0.99)
    assert sf["server_slo_attainment"] == pytest.approx({"mean": 0.98, "min": 0.98, "max": 0.98})
    assert sf["profiled_accuracy"] == pytest.approx(0.965)
    assert sf["realized_accuracy"] == pytest.approx(0.975)
    p = sf["paired"]
    assert p["against"] == "clipper:0" and p["pairs"] == 2
    assert p["slo_attainment_diff"] == pytest.approx(((0.97 - 0.99) + (0.99 - 0.98)) / 2)
    assert p["profiled_accuracy_diff"] == pytest.approx(((0.97 + 0.96) / 2) - 0.9487)
    # a repetition cut short: the unpaired run still counts in its own cell, not in a pair
    base2, sf2 = cal.summarize_rows(rows + [row("clipper:0", 2, 0.5, 0.9487)])
    assert base2["runs"] == 3 and sf2["paired"]["pairs"] == 2
    cal.print_summary(cal.summarize_rows(rows))
    out = capsys.readouterr().out
    assert "0.9800 [0.9700-0.9900]" in out
    assert "-0.0050 attainment, +1.63 points accuracy vs clipper:0 (2 pairs)" in out


def test_calibration_live_batch_logs_per_cell_and_long_names_stay_aligned(tmp_path, capsys,
                                                                          monkeypatch):
    """--batch-logs gives each cell's server its own `--batch-log` CSV beside its server log
    (one `--server-args=--batch-log X` would be overwritten by every cell); a policy name
    longer than the first column goes on a line of its own so the numbers stay aligned."""
    cal = _bench("calibration_live")
    started = []
    monkeypatch.setattr(cal, "start", lambda cmd, **kw: started.append(cmd) or None)
    monkeypatch.setattr(cal, "free_port", lambda: 1)
    assert cal.parse_args([]).batch_logs is False
    cal.Server("slackfit", cal.parse_args([]), tmp_path / "a.server.log")
    assert "--batch-log" not in started[-1]
    args = cal.parse_args(["--batch-logs", "--server-args=--batch-wait-ms 0"])
    cal.Server("slackfit", args, tmp_path / "a.server.log", tmp_path / "a.batches.csv")
    cmd = started[-1]
    assert cmd[cmd.index("--batch-log") + 1] == str(tmp_path / "a.batches.csv")
    assert cmd[-2:] == ["--batch-wait-ms", "0"]

    row = {"policy": "slackfit:cap=0.5,early_drop=0", "rate": 500.0, "slo_attainment": 0.97,
           "server_slo_attainment": 0.98, "profiled_accuracy": 0.97, "realized_accuracy": 0.97,
           "latency_ms_p99": 60.0, "max_send_lag_ms": 3.0, "outcomes": {"200": 10},
           "batch_ratio_observed_over_planned": {"p50": 0.5, "p99": 1.1, "batches": 10},
           "calibration": {}}
    cal.print_row(row)
    cal.print_row({**row, "policy": "slackfit"})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "slackfit:cap=0.5,early_drop=0"
    numbers = [ln for ln in lines if "0.9700" in ln]
    assert len(numbers) == 2 and numbers[0].index("500") == numbers[1].index("500")
