"""A loop that never blocks: the loop-lag metric, and large bodies, responses and /metrics
handled off the loop (server/offload.py) with the same results and errors as inline."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from conftest import ServerThread, synthetic_table
from superserve.runtime.fake import FakePool
from superserve.server import offload
from superserve.server.metrics import LoopLagMonitor


def test_loop_lag_monitor_sees_a_blocking_call():
    async def body():
        h = Histogram("lag", "lag", registry=CollectorRegistry(), buckets=(0.01, 0.1, 1.0))
        mon = LoopLagMonitor(h, interval_s=0.01)
        mon.start(asyncio.get_running_loop())
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251 (blocking the loop is the point)
        await asyncio.sleep(0.05)
        mon.stop()
        assert mon.samples >= 2
        assert mon.recent_max_s >= 0.25  # a lower bound: a busier machine only adds lag
    asyncio.run(body())


def test_should_offload_follows_the_mode(monkeypatch):
    assert offload.should_offload(offload.OFFLOAD_MIN_BYTES) is (offload.MODE != "off")
    assert not offload.should_offload(offload.OFFLOAD_MIN_BYTES - 1)
    monkeypatch.setattr(offload, "MODE", "off")
    assert not offload.should_offload(1 << 30)


def test_run_cpu_returns_results_and_raises_errors_across_the_process():
    from superserve.errors import InvalidInputError
    from superserve.server.codec import ModelIO, decode_http

    io = ModelIO()
    good = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                                   "datatype": "FP32", "data": [0.5] * 784}]}).encode()

    async def body():
        d = await offload.run_cpu(decode_http, good, None, io)
        assert d.images.shape == (1, 1, 28, 28) and float(d.images[0, 0, 0, 0]) == 0.5
        with pytest.raises(InvalidInputError, match="not valid JSON"):
            await offload.run_cpu(decode_http, b"{nope", None, io)
    try:
        asyncio.run(body())
    finally:
        offload.shutdown()


@pytest.fixture(scope="module")
def srv():
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1),
                     max_body_bytes=8 << 20)
    try:
        yield s
    finally:
        s.close()
        offload.shutdown()


def test_large_bodies_are_served_like_small_ones(srv):
    url = f"{srv.http}/v2/models/resnet/infer"
    imgs = np.random.default_rng(1).random((64, 1, 28, 28), dtype=np.float32)
    body = json.dumps({"inputs": [{"name": "input", "shape": list(imgs.shape),
                                   "datatype": "FP32", "data": imgs.tolist()}],
                       "parameters": {"slo_ms": 5000}}).encode()
    assert offload.should_offload(len(body)) or offload.MODE == "off"
    r = httpx.post(url, content=body, headers={"content-type": "application/json"},
                   timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"][0] == 64
    # the same errors as inline: a bad value deep inside a large body is a 400 with a message
    bad = body.replace(b"0.", b'"x', 1)
    r = httpx.post(url, content=bad, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "error" in r.json()
    # binary extension, large: decoded on a thread
    head = json.dumps({"inputs": [{"name": "input", "shape": list(imgs.shape),
                                   "datatype": "FP32",
                                   "parameters": {"binary_data_size": imgs.nbytes}}],
                       "parameters": {"slo_ms": 5000}}).encode()
    r = httpx.post(url, content=head + imgs.tobytes(),
                   headers={"content-type": "application/octet-stream",
                            "inference-header-content-length": str(len(head))}, timeout=30)
    assert r.status_code == 200, r.text


def test_metrics_render_off_loop_with_loop_lag(srv):
    text = httpx.get(f"{srv.http}/metrics", timeout=10).text
    assert "superserve_event_loop_lag_seconds_bucket" in text
    assert "superserve_event_loop_lag_max_seconds" in text
    assert "superserve_queue_depth 0.0" in text and "superserve_workers_alive 1.0" in text
    assert 'superserve_requests_total{outcome="cancelled"}' in text
