import asyncio
import csv

import numpy as np
import pytest

from superserve.bench.loadgen import (
    LoadgenConfig,
    RequestRecord,
    plot_timeseries,
    run_loadgen,
    summarize,
    write_csv,
)
from superserve.errors import ConfigError


class ScriptedClient:
    """Answers by request index: every 5th is dropped for deadline, every 7th raises, the
    rest complete with the image's label as prediction (or a wrong one every 3rd)."""

    def __init__(self, labels, delay_s=0.0):
        self.labels, self.delay_s, self.calls = labels, delay_s, 0

    async def infer(self, key, image, rec: RequestRecord) -> None:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if rec.index % 7 == 6:
            raise ConnectionError("peer reset")
        if rec.index % 5 == 4:
            rec.outcome, rec.status = "dropped_deadline", "504"
            return
        rec.outcome, rec.status = "completed", "200"
        rec.subnet_id, rec.subnet_accuracy, rec.batch_size = 3, 0.95, 2
        rec.predicted = int(self.labels[key]) if rec.index % 3 else -1

    async def close(self):
        pass


def run(cfg, arrivals, client, images, labels):
    return asyncio.run(run_loadgen(cfg, arrivals, images, labels, client=client))


def test_every_request_ends_in_one_outcome_and_summary_counts():
    images = np.zeros((10, 1, 28, 28), np.float32)
    labels = np.arange(10) % 10
    arrivals = np.linspace(0, 0.2, 30)
    cfg = LoadgenConfig(url="http://127.0.0.1:1", slo_ms=1000)
    client = ScriptedClient(labels)
    recs = run(cfg, arrivals, client, images, labels)
    assert client.calls == 30 and len(recs) == 30
    s = summarize(recs, cfg.slo_ms)
    assert sum(s["outcomes"].values()) == 30
    failed = [r for r in recs if r.index % 7 == 6]
    assert all(r.outcome == "failed" and "peer reset" in r.message for r in failed)
    assert s["outcomes"]["failed"] == len(failed)
    met = [r for r in recs if r.deadline_met]
    assert s["slo_attainment"] == pytest.approx(len(met) / 30)
    assert s["mean_serving_accuracy"] == pytest.approx(0.95)
    assert s["realized_accuracy"] == pytest.approx(sum(r.index % 3 != 0 for r in met) / len(met))
    assert s["max_send_lag_ms"] >= 0


def test_open_loop_sends_do_not_wait_for_responses():
    images = np.zeros((2, 1, 28, 28), np.float32)
    labels = np.zeros(2, np.int64)
    cfg = LoadgenConfig(url="127.0.0.1:1", slo_ms=10, timeout_s=5)
    client = ScriptedClient(labels, delay_s=0.3)  # slow server
    recs = run(cfg, np.linspace(0, 0.1, 11), client, images, labels)
    # all 11 were sent within the trace's 0.1 s although each answer takes 0.3 s
    assert max(r.sent_s for r in recs) < 0.25
    assert all(not r.deadline_met for r in recs)  # 300 ms > 10 ms SLO


def test_client_timeout_is_failed_not_lost():
    images = np.zeros((1, 1, 28, 28), np.float32)
    labels = np.zeros(1, np.int64)
    cfg = LoadgenConfig(url="127.0.0.1:1", slo_ms=10, timeout_s=0.05)
    recs = run(cfg, [0.0, 0.01], ScriptedClient(labels, delay_s=1.0), images, labels)
    assert [r.outcome for r in recs] == ["failed", "failed"]
    assert "timeout" in recs[0].message


def test_csv_and_plot(tmp_path):
    recs = [RequestRecord(index=i, scheduled_s=i * 0.1, sent_s=i * 0.1, outcome="completed",
                          latency_ms=5.0, deadline_met=True, subnet_accuracy=0.9, batch_size=1)
            for i in range(20)]
    write_csv(recs, tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 20 and rows[0]["outcome"] == "completed"
    plot_timeseries(recs, tmp_path / "t.png", bin_s=0.5)
    assert (tmp_path / "t.png").stat().st_size > 1000


@pytest.mark.parametrize("kw,msg", [({"protocol": "udp"}, "protocol"),
                                    ({"slo_ms": 0}, "slo_ms"),
                                    ({"url": "http://10.0.0.1:8000"}, "loopback"),
                                    ({"grpc_deadline": "never"}, "grpc_deadline")])
def test_config_errors(kw, msg):
    base = {"url": "http://127.0.0.1:8000"}
    base.update(kw)
    with pytest.raises(ConfigError, match=msg):
        LoadgenConfig(**base)


def test_attainment_from_schedule_charges_the_generators_own_lag():
    recs = [RequestRecord(index=i, scheduled_s=0.1 * i, sent_s=0.1 * i + lag, outcome="completed",
                          latency_ms=lat, deadline_met=lat <= 50)
            for i, (lag, lat) in enumerate([(0.0, 10.0), (0.030, 30.0), (0.0, 60.0), (0.001, 48.0)])]
    s = summarize(recs, 50.0)
    assert s["slo_attainment"] == pytest.approx(3 / 4)  # from the actual send
    # 30 ms late + 30 ms > 50 ms; 1 ms late + 48 ms = 49 ms still within
    assert s["slo_attainment_from_schedule"] == pytest.approx(2 / 4)


def test_grpc_call_deadline_is_the_slo_from_the_scheduled_send():
    """--grpc-deadline slo: a call sent late gets that much less time (a client with an SLO
    gives up at it); one sent past its SLO still goes out, with 1 ms; timeout: timeout_s."""
    pytest.importorskip("grpc")
    from superserve.bench.loadgen import _GrpcClient

    def timeout_of(cfg, scheduled_s, sent_s):
        async def go():
            client = _GrpcClient(cfg)  # a channel connects lazily: nothing is sent
            try:
                return client.call_timeout_s(RequestRecord(index=0, scheduled_s=scheduled_s,
                                                           sent_s=sent_s))
            finally:
                await client.close()
        return asyncio.run(go())

    cfg = LoadgenConfig(url="127.0.0.1:1", protocol="grpc", slo_ms=50.0, timeout_s=10.0)
    assert cfg.grpc_deadline == "slo"  # the default
    assert timeout_of(cfg, 1.0, 1.0) == pytest.approx(0.050)
    assert timeout_of(cfg, 1.0, 1.012) == pytest.approx(0.038)
    assert timeout_of(cfg, 1.0, 1.2) == pytest.approx(1e-3)
    old = LoadgenConfig(url="127.0.0.1:1", protocol="grpc", slo_ms=50.0, timeout_s=10.0,
                        grpc_deadline="timeout")
    assert timeout_of(old, 1.0, 1.012) == 10.0
