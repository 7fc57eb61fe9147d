"""Late at the door: a request under the default SLO whose SLO is already spent when its last
byte is read ends 504 before its body is decoded (`--late-at-door`, on by default), counted
as the router counts any request it refuses as late; a request that may still be met, or
that names its own SLO, is decoded and judged as before."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from conftest import GreedyPolicy, socket_wait_server, synthetic_table
from superserve.runtime.clock import ManualClock
from superserve.runtime.fake import FakePool
from superserve.runtime.router import Router, RouterConfig
from superserve.server.codec import undecoded_images
from superserve.types import Outcome


def _json(shape, params=None, data=None) -> bytes:
    doc = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                       "data": data if data is not None else [0.0] * int(np.prod(shape))}]}
    if params is not None:
        doc["parameters"] = params
    return json.dumps(doc).encode()


@pytest.mark.parametrize("body,want", [
    (_json([1, 1, 28, 28]), 1),
    (_json([3, 1, 28, 28]), 3),
    (b'{"inputs": [{"name": "input", "shape": [ 2 , 1, 28, 28]}]}', 2),
    (b'{"inputs": [{"name": "image", "shape": [4], "datatype": "BYTES"}]}', 4),
    (b'{"inputs": [{"name": "input", "shape": ["x", 1]}]}', 1),  # not a count: 1
    (b'{"inputs": [{"name": "input", "shape": [0, 1]}]}', 1),
    (b'{"inputs": [{"name": "input", "shape": [1234567890123]}]}', 1),  # too long: 1
    (b'{"inputs": []}', 1),  # no shape at all: decoded later, refused as one image here
    (_json([1, 1, 28, 28], {"slo_ms": 500}), None),  # its own SLO: decoded and judged
    (_json([1, 1, 28, 28], {"timeout": 500000}), None),  # Triton's timeout too
    (b'{"parameters": {"slo\\u005fms": 500}, "inputs": []}', None),  # an escaped name
])
def test_what_the_door_reads_of_an_undecoded_body(body, want):
    assert undecoded_images(body, None) == want


def test_the_door_reads_only_the_json_part_of_a_binary_request():
    head = b'{"inputs": [{"name": "input", "shape": [2, 1, 28, 28], "datatype": "FP32"}]}'
    tensor = b'slo_ms \\ "timeout"' + bytes(100)  # tensor bytes may hold anything
    assert undecoded_images(head + tensor, str(len(head)).encode()) == 2
    assert undecoded_images(head + tensor, None) is None  # read as all JSON: may name one
    assert undecoded_images(head + tensor, b"12a") is None  # a bad length: decoded (400)


def _router(table, **cfg):
    clock = ManualClock()
    router = Router(GreedyPolicy(table), FakePool(table, clock, n_workers=1), clock,
                    RouterConfig(**cfg))
    router.start()
    clock.run_until(1.0)
    return clock, router


def test_a_request_already_late_ends_at_the_door_and_is_counted_as_submit_counts_it():
    table = synthetic_table()

    async def body():
        _, router = _router(table)
        seen = []
        assert router.late(0.960, 0.030)
        fut = router.refuse_late(3, 0.030, 0.960, on_done=seen.append)
        assert fut.done()
        r = fut.result()
        assert r.outcome is Outcome.DROPPED_DEADLINE and "40 ms have passed" in str(r.error)
        assert (router.stats.submitted, router.stats.late_at_door) == (1, 1)
        assert router.stats.terminal[Outcome.DROPPED_DEADLINE] == 1
        assert router.entry_share < 0  # it brought less than nothing: the rule sees it
        assert router._rate.level(1.0) == pytest.approx(3)  # and the rate estimate its images
        assert router.open_requests == 0
        await asyncio.sleep(0)
        assert seen == [fut]  # answered through on_done, as submit's refusals are
        # one that came 10 ms ago still has 20 ms: not judged here, nothing counted
        assert not router.late(0.990, 0.030)
        assert (router.stats.submitted, router.stats.late_at_door) == (1, 1)
        # and submit's own test refuses what the door refuses, with the same words
        late = router.submit(np.zeros((1, 1, 28, 28), np.float32), 0.030, 0.960).result()
        assert late.outcome is Outcome.DROPPED_DEADLINE
        assert str(late.error) == str(r.error)
        assert router.stats.late_at_door == 1
    asyncio.run(body())


def test_a_draining_router_leaves_the_answer_to_submit():
    table = synthetic_table()

    async def body():
        _, router = _router(table)
        assert router.late(0.0, 0.030)
        router._draining = True
        assert not router.late(0.0, 0.030)
    asyncio.run(body())


@pytest.mark.parametrize("late_at_door", [True, False])
def test_a_late_request_is_answered_504_before_its_body_is_read(monkeypatch, late_at_door):
    """Bytes the kernel held 0.3 s (a stand-in for a front end behind on its core) under the
    default 50 ms SLO: a well-formed request is a 504 either way; a malformed one is a 504
    at the door (never decoded), and a 400 without the door (decoded first). A request that
    names its own, longer SLO is decoded and served; one for a model the server does not
    serve is a 404 either way."""
    with socket_wait_server(monkeypatch, 0.3, late_at_door=late_at_door) as (s, conn):
        def post(body: bytes, model: str = "resnet") -> tuple[int, bytes]:
            conn.request("POST", f"/v2/models/{model}/infer", body=body,
                         headers={"content-type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read()

        status, text = post(_json([1, 1, 28, 28]), model="nope")  # late, but no such model
        assert status == 404 and b"unknown model" in text, text

        status, text = post(_json([1, 1, 28, 28]))
        assert status == 504 and b"ms have passed since the request's first byte" in text
        status, text = post(_json([1, 1, 28, 28], data=["not a number"] * 784))
        assert status == (504 if late_at_door else 400), text
        status, text = post(_json([1, 1, 28, 28], {"slo_ms": 2000}))
        assert status == 200, text
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read()
        want = float(2 if late_at_door else 0)
        assert f"superserve_late_at_door_total {want}".encode() in metrics
        stats = s.running.router.stats
        assert stats.late_at_door == (2 if late_at_door else 0)
        assert stats.terminal[Outcome.DROPPED_DEADLINE] == (2 if late_at_door else 1)
        assert stats.terminal[Outcome.COMPLETED] == 1


@pytest.mark.parametrize("door", [[], ["--no-late-at-door"]])
def test_the_cpu_benchmark_refuses_every_late_request(capsys, door):
    """benchmarks/frontend_cpu.py --late: every request is a 504, at the door or after its
    decode (the figure in docs/serving.md is the CPU of each)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import frontend_cpu

    assert frontend_cpu.cli(["--late", "--requests", "32", "--concurrency", "4", "--json",
                             *door]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["statuses"] == {"504": 32} and out["late_at_door"] is (not door)
    assert (out["refused_at_door"] >= 32) is (not door)  # the warm-up's requests too
    assert (out["refused_at_door"] == 0) is bool(door)
