"""The KServe v2 front ends end to end: REST and gRPC on ephemeral 127.0.0.1 ports, the real
router, and the profile-driven fake pool (no compute). tritonclient http and grpc unchanged."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from conftest import ServerThread, synthetic_table
from superserve.runtime.fake import FakePool
from superserve.server import proto

IMAGES = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def srv():
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1),
                     max_body_bytes=200_000)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def slow_srv():
    """One worker, every batch 40x slower than profiled: queues build, deadlines pass."""
    s = ServerThread(synthetic_table(),
                     lambda t, c: FakePool(t, c, n_workers=1, latency_scale=40.0), max_queue=20)
    try:
        yield s
    finally:
        s.close()


def post_json(url, body, **kw):
    return httpx.post(url, content=json.dumps(body).encode() if not isinstance(body, bytes)
                      else body, headers={"content-type": "application/json"}, timeout=10, **kw)


def infer_body(images=IMAGES, **params):
    return {"inputs": [{"name": "input", "shape": list(images.shape), "datatype": "FP32",
                        "data": images.ravel().tolist()}], "parameters": params}


def wait_until(cond, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.005)


# ----------------------------------------------------------------------------- endpoints
def test_health_and_metadata_endpoints(srv):
    assert httpx.get(f"{srv.http}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{srv.http}/v2/health/ready").status_code == 200
    md = httpx.get(f"{srv.http}/v2").json()
    assert md["name"] == "superserve" and "binary_tensor_data" in md["extensions"]
    mm = httpx.get(f"{srv.http}/v2/models/resnet").json()
    assert mm["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}
    assert [o["name"] for o in mm["outputs"]] == ["logits", "predicted"]
    assert httpx.get(f"{srv.http}/v2/models/resnet/versions/1").status_code == 200
    assert httpx.get(f"{srv.http}/v2/models/resnet/ready").status_code == 200
    assert httpx.get(f"{srv.http}/v2/models/nope/ready").status_code == 404
    assert httpx.get(f"{srv.http}/v2/models/resnet/versions/7").status_code == 404


def test_rest_json_infer_returns_subnet_parameters(srv):
    r = post_json(f"{srv.http}/v2/models/resnet/infer", infer_body(slo_ms=100))
    assert r.status_code == 200, r.text
    out = r.json()
    p = out["parameters"]
    assert set(p) == {"subnet_id", "subnet_accuracy", "batch_size", "queue_ms", "service_ms",
                      "deadline_met"}
    assert p["deadline_met"] is True and p["subnet_id"] == 2  # plenty of slack: most accurate
    by = {o["name"]: o for o in out["outputs"]}
    assert by["logits"]["shape"] == [3, 10] and by["predicted"]["shape"] == [3]
    assert by["predicted"]["data"] == [2, 2, 2]  # the fake's argmax is the subnet id


def test_tritonclient_http_binary_round_trip(srv):
    c = thttp.InferenceServerClient(srv.http.removeprefix("http://"))
    try:
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("resnet")
        assert c.get_model_metadata("resnet")["name"] == "resnet"
        inp = thttp.InferInput("input", list(IMAGES.shape), "FP32")
        inp.set_data_from_numpy(IMAGES, binary_data=True)
        outs = [thttp.InferRequestedOutput("logits", binary_data=True),
                thttp.InferRequestedOutput("predicted", binary_data=False)]
        # tritonclient.http sends only int/bool/str parameters
        res = c.infer("resnet", [inp], outputs=outs, parameters={"slo_ms": 80})
        assert res.as_numpy("logits").shape == (3, 10)
        assert res.as_numpy("predicted").tolist() == [2, 2, 2]
        assert res.get_response()["parameters"]["batch_size"] >= 1
        # no outputs named: tritonclient asks for all outputs in binary
        res = c.infer("resnet", [inp], timeout=80_000)  # Triton's timeout, microseconds
        assert res.as_numpy("predicted").dtype == np.int64
    finally:
        c.close()


def test_tritonclient_grpc_round_trip(srv):
    c = tgrpc.InferenceServerClient(srv.grpc)
    try:
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("resnet")
        md = c.get_model_metadata("resnet")
        assert md.inputs[0].shape == [-1, 1, 28, 28]
        assert "binary_tensor_data" in c.get_server_metadata().extensions
        inp = tgrpc.InferInput("input", list(IMAGES.shape), "FP32")
        inp.set_data_from_numpy(IMAGES)
        res = c.infer("resnet", [inp], parameters={"slo_ms": 80})
        assert res.as_numpy("logits").shape == (3, 10)
        assert res.as_numpy("predicted").tolist() == [2, 2, 2]
        params = res.get_response().parameters
        assert params["subnet_id"].int64_param == 2 and params["deadline_met"].bool_param
        assert 0.0 < params["subnet_accuracy"].double_param <= 1.0
        res = c.infer("resnet", [inp], timeout=80_000)
        assert res.as_numpy("predicted").shape == (3,)
    finally:
        c.close()


def test_loadgen_grpc_proto_helpers_work(srv):
    ch = grpc.insecure_channel(srv.grpc)
    try:
        stub = proto.pb2_grpc().GRPCInferenceServiceStub(ch)
        assert stub.ServerLive(proto.pb2().ServerLiveRequest()).live
    finally:
        ch.close()


def test_metrics_endpoint(srv):
    post_json(f"{srv.http}/v2/models/resnet/infer", infer_body(slo_ms=100))
    text = httpx.get(f"{srv.http}/metrics").text
    for name in ('superserve_requests_total{outcome="completed"}', "superserve_queue_depth",
                 "superserve_request_latency_seconds_bucket", "superserve_queue_time_seconds",
                 "superserve_batch_size_bucket", 'superserve_subnet_requests_total{subnet="2"}',
                 "superserve_workers_alive 1.0", "superserve_slo_attainment",
                 "superserve_calibration_plan_scale", "superserve_calibration_steps",
                 "superserve_calibration_rate_boost", "superserve_calibration_entry_share",
                 "superserve_calibration_front_end_behind"):
        assert name in text, name
    # every dispatched batch is counted once, under the SlackFit rule that planned it
    from superserve.bench.server_proc import parse_metrics, plan_rules
    from superserve.scheduling.policies import SLACKFIT_RULES

    samples = parse_metrics(text)
    plans = plan_rules({}, samples)
    assert plans and set(plans) <= set(SLACKFIT_RULES), plans
    assert sum(plans.values()) == sum(v for k, v in samples.items()
                                      if k.startswith("superserve_subnet_batches_total{"))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("body,needle", [
    (infer_body(np.zeros((1, 1, 27, 28), np.float32)), "shape"),
    ({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "INT32",
                  "data": [0] * 784}]}, "datatype"),
    ({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                  "data": [0.0] * 700}]}, "784"),
    ({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                  "data": [0.0] * 784}]}, "input name"),
    (infer_body(slo_ms=-5), "slo_ms"),
    (b"{not json", "JSON"),
    (b'{"inputs": [{"name": "input", "shape": [1,1,28,28], "datatype": "FP32", "data": ['
     + b"NaN, " * 783 + b"0.0]}]}", "non-finite"),
    ({**infer_body(), "outputs": [{"name": "probs"}]}, "unknown output"),
])
def test_rest_bad_input_is_400_with_message(srv, body, needle):
    r = post_json(f"{srv.http}/v2/models/resnet/infer", body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


def test_rest_unknown_model_404_and_oversize_413(srv):
    r = post_json(f"{srv.http}/v2/models/alexnet/infer", infer_body())
    assert r.status_code == 404 and "alexnet" in r.json()["error"]
    big = infer_body(np.zeros((64, 1, 28, 28), np.float32))  # > 200 kB of JSON
    r = post_json(f"{srv.http}/v2/models/resnet/infer", big)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert httpx.get(f"{srv.http}/v2/nothing").status_code == 404


def test_grpc_bad_input_statuses(srv):
    c = tgrpc.InferenceServerClient(srv.grpc)
    try:
        inp = tgrpc.InferInput("input", [1, 1, 20, 20], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 1, 20, 20), np.float32))
        with pytest.raises(InferenceServerException, match="shape") as e:
            c.infer("resnet", [inp])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        inp = tgrpc.InferInput("input", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(np.full((1, 1, 28, 28), np.inf, np.float32))
        with pytest.raises(InferenceServerException, match="non-finite"):
            c.infer("resnet", [inp])
        inp.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
        with pytest.raises(InferenceServerException, match="alexnet") as e:
            c.infer("alexnet", [inp])
        assert e.value.status() == "StatusCode.NOT_FOUND"
    finally:
        c.close()
    ch = grpc.insecure_channel(srv.grpc)
    try:
        raw = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                             request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as e:
            raw(b"\xff\xff\xff\xff not a protobuf", timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed" in e.value.details()
    finally:
        ch.close()


# ----------------------------------------------------------------------------- load
def test_deadline_expiry_in_queue_is_504_and_deadline_exceeded(slow_srv):
    url = f"{slow_srv.http}/v2/models/resnet/infer"
    with ThreadPoolExecutor(2) as ex:
        # occupies the only worker for 40 x 20 ms = 0.8 s (16 images on the accurate subnet)
        long = ex.submit(post_json, url, infer_body(np.zeros((16, 1, 28, 28), np.float32),
                                                    slo_ms=3000))
        wait_until(lambda: slow_srv.running.router.busy_workers == 1)
        short = post_json(url, infer_body(slo_ms=60))
        assert short.status_code == 504 and "deadline" in short.json()["error"]
        c = tgrpc.InferenceServerClient(slow_srv.grpc)
        try:
            inp = tgrpc.InferInput("input", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
            with pytest.raises(InferenceServerException) as e:
                c.infer("resnet", [inp], parameters={"slo_ms": 60})
            assert e.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        finally:
            c.close()
        assert long.result().status_code == 200


def test_overload_is_429_with_retry_after_and_resource_exhausted(slow_srv):
    url = f"{slow_srv.http}/v2/models/resnet/infer"
    body = infer_body(np.zeros((6, 1, 28, 28), np.float32), slo_ms=8000)  # 8 x 6 > 20 queued
    with ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda _: post_json(url, body), range(8)))
    refused = [r for r in rs if r.status_code == 429]
    assert refused and all("Retry-After" in r.headers for r in refused)
    assert "queue full" in refused[0].json()["error"]
    assert all(r.status_code in (200, 429) for r in rs)


def test_subnet_parameters_shrink_as_load_rises():
    """Quiet: the most accurate subnet at batch 1. A burst of concurrent requests with the
    same SLO: less slack per request, so smaller subnets."""
    # batches 8x slower than the table's: a burst outruns one worker however fast the client
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1, latency_scale=8),
                     default_slo_s=0.200)  # SlackFit's guard: no batch over 100 ms
    try:
        url = f"{s.http}/v2/models/resnet/infer"
        # the SLO counts from each request's first byte: 48 connections at once (the client
        # in this process) spend tens of ms in the front end on a busy machine
        # (20 quiet requests: calibration has seen enough batches to plan with its tail)
        quiet = [post_json(url, infer_body(IMAGES[:1], slo_ms=200)).json()["parameters"]
                 for _ in range(20)]
        body = json.dumps(infer_body(IMAGES[:1], slo_ms=200)).encode()

        async def burst_of(n):
            async with httpx.AsyncClient(timeout=10) as client:
                return await asyncio.gather(*[client.post(url, content=body) for _ in range(n)])

        # the first burst teaches the router how large bursts get (SlackFit's burst guard
        # remembers the peak for seconds); the second one is planned knowing it
        burst = asyncio.run(burst_of(48))
        burst += asyncio.run(burst_of(48))
        ok = [r.json()["parameters"] for r in burst if r.status_code == 200]
        assert all(q["subnet_id"] == 2 and q["batch_size"] == 1 for q in quiet)
        assert ok and min(p["subnet_accuracy"] for p in ok) < quiet[0]["subnet_accuracy"]
        assert min(p["subnet_id"] for p in ok) < 2  # how large the batches grow is timing
    finally:
        s.close()


class _Ctx:
    def __init__(self, left):
        self.left = left

    def time_remaining(self):
        return self.left


@pytest.mark.parametrize("slo_s,left,want", [
    (0.050, None, 0.050),  # no deadline on the call
    (0.050, 3600.0, 0.050),  # a deadline past the longest SLO: none
    (0.050, 0.030, 0.032),  # 2 ms since the first byte + 30 ms left
    (0.020, 0.030, 0.020),  # slo_ms is the tighter
    (None, 0.030, 0.032),  # no slo_ms: the call's deadline is the SLO
    (0.050, -0.010, 1e-6),  # already past: a deadline miss at once
])
def test_call_slo_is_capped_by_the_grpc_deadline(slo_s, left, want):
    from superserve.server.grpc_api import call_slo_s
    assert call_slo_s(slo_s, _Ctx(left), 0.002, 3600.0) == pytest.approx(want)
    assert call_slo_s(slo_s, None, 0.002, 3600.0) == slo_s


def test_grpc_call_deadline_is_what_the_router_plans_with():
    """A call whose gRPC deadline is shorter than its slo_ms is planned against the
    deadline: a subnet that answers before the client gives up, not the slow accurate one
    that fits the parameter (before, it was served too late and the call failed)."""
    # every batch 20x the table: subnet 2 takes ~100 ms at batch 1, subnet 1 ~50, subnet 0 ~25
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1, latency_scale=20))
    pb = proto.pb2()
    req = pb.ModelInferRequest(model_name="resnet")
    req.parameters["slo_ms"].double_param = 10_000.0
    req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 28, 28])
    req.raw_input_contents.append(IMAGES[:1].tobytes())
    ch = grpc.insecure_channel(s.grpc)
    try:
        stub = proto.pb2_grpc().GRPCInferenceServiceStub(ch)

        def subnet(timeout):
            return stub.ModelInfer(req, timeout=timeout).parameters["subnet_id"].int64_param

        roomy = [subnet(30) for _ in range(10)]  # and the calibration learns the x20
        assert roomy[-1] == 2
        assert subnet(0.080) < 2
    finally:
        ch.close()
        s.close()


def test_grpc_overload_is_resource_exhausted(slow_srv):
    pb = proto.pb2()
    req = pb.ModelInferRequest(model_name="resnet")
    req.parameters["slo_ms"].double_param = 8000.0
    t = req.inputs.add(name="input", datatype="FP32", shape=[6, 1, 28, 28])
    req.raw_input_contents.append(np.zeros((6, 1, 28, 28), np.float32).tobytes())
    assert t.name == "input"
    ch = grpc.insecure_channel(slow_srv.grpc)
    try:
        stub = proto.pb2_grpc().GRPCInferenceServiceStub(ch)
        calls = [stub.ModelInfer.future(req, timeout=30) for _ in range(8)]
        codes = []
        for c in calls:
            try:
                c.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert "queue full" in e.details()
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    finally:
        ch.close()


def test_worker_failure_is_500_with_message_and_draining_is_503():
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1))
    try:
        url = f"{s.http}/v2/models/resnet/infer"
        router = s.running.router  # no retry of a failed batch here (see test_lifecycle)
        s.loop.call_soon_threadsafe(setattr, router, "config",
                                    dataclasses.replace(router.config, max_batch_attempts=1))
        s.loop.call_soon_threadsafe(setattr, s.running.pool, "fail_next", "CUDA fell over")
        s.call(asyncio.sleep(0))  # runs after the callback above: FIFO on the loop
        r = post_json(url, infer_body(slo_ms=100))
        assert r.status_code == 500 and "CUDA fell over" in r.json()["error"]
        assert post_json(url, infer_body(slo_ms=100)).status_code == 200  # worker still serves
        s.loop.call_soon_threadsafe(s.running.router.begin_drain)
        s.call(asyncio.sleep(0))
        r = post_json(url, infer_body(slo_ms=100))
        assert r.status_code == 503 and "shutting down" in r.json()["error"]
        assert httpx.get(f"{s.http}/v2/health/ready").status_code == 503
        c = tgrpc.InferenceServerClient(s.grpc)
        try:
            inp = tgrpc.InferInput("input", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
            with pytest.raises(InferenceServerException) as e:
                c.infer("resnet", [inp])
            assert e.value.status() == "StatusCode.UNAVAILABLE"
        finally:
            c.close()
    finally:
        s.close()


def test_server_slo_metric_counts_written_responses_on_both_protocols(srv):
    """The SLO gauge counts a completed request when its response was written (HTTP: after
    the body is sent; gRPC: when the call is done), on the request's first-byte clock."""
    import re as _re

    import tritonclient.grpc as grpcclient

    url = f"{srv.http}/v2/models/resnet/infer"
    for _ in range(3):
        assert post_json(url, infer_body(IMAGES[:1], slo_ms=1000)).status_code == 200
    c = grpcclient.InferenceServerClient(srv.grpc)
    inp = grpcclient.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(IMAGES[:1])
    c.infer("resnet", [inp], parameters={"slo_ms": 1000})
    time.sleep(0.2)  # the gRPC done-callback runs just after the client has its answer
    text = httpx.get(f"{srv.http}/metrics").text
    met = float(_re.search(r"^superserve_requests_deadline_met_total (\S+)", text, _re.M)[1])
    count = float(_re.search(r"^superserve_request_edge_latency_seconds_count (\S+)", text,
                             _re.M)[1])
    assert met >= 4 and count >= 4
