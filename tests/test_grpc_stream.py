"""ModelStreamInfer (Triton's streaming extension): many requests on one gRPC call, each
answered once as it completes, errors as error_message answers that keep the stream open;
tritonclient's start_stream/async_stream_infer work unchanged."""

from __future__ import annotations

import queue
import threading

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from conftest import ServerThread, synthetic_table
from superserve.runtime.fake import FakePool
from superserve.server import proto

IMAGES = np.random.default_rng(1).random((2, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def srv():
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1))
    yield s
    s.close()


def _request(pb, rid: str, model: str = "resnet", shape=(2, 1, 28, 28)):
    req = pb.ModelInferRequest(model_name=model, id=rid)
    req.parameters["slo_ms"].double_param = 200.0
    t = req.inputs.add(name="input", datatype="FP32", shape=list(shape))
    t.contents.fp32_contents.extend(np.resize(IMAGES, shape).ravel().tolist())
    return req


def test_stream_answers_every_request_once_errors_inline(srv):
    pb = proto.pb2()
    good = [_request(pb, f"r{i}") for i in range(6)]
    bad = [_request(pb, "wrong-model", model="nope"),
           _request(pb, "bad-shape", shape=(1, 1, 20, 20))]
    with grpc.insecure_channel(srv.grpc) as ch:
        stub = proto.pb2_grpc().GRPCInferenceServiceStub(ch)
        answers = list(stub.ModelStreamInfer(iter(good[:3] + bad + good[3:]), timeout=30))
    by_id = {a.infer_response.id: a for a in answers}
    assert len(answers) == len(by_id) == 8  # each request answered exactly once
    for i in range(6):
        a = by_id[f"r{i}"]
        assert a.error_message == ""
        assert [o.name for o in a.infer_response.outputs] == ["logits", "predicted"]
        assert a.infer_response.parameters["subnet_id"].int64_param >= 0
    assert "nope" in by_id["wrong-model"].error_message
    assert by_id["wrong-model"].infer_response.parameters["grpc_status"].string_param == \
        "NOT_FOUND"
    assert by_id["bad-shape"].infer_response.parameters["grpc_status"].string_param == \
        "INVALID_ARGUMENT"


def test_stream_of_garbage_bytes_is_answered_not_crashed(srv):
    with grpc.insecure_channel(srv.grpc) as ch:
        call = ch.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer",
                                request_serializer=lambda b: b,
                                response_deserializer=proto.pb2().ModelStreamInferResponse
                                .FromString)
        answers = list(call(iter([b"\xff\x00garbage", b""]), timeout=30))
    assert len(answers) == 2
    assert "malformed" in answers[0].error_message
    assert answers[1].error_message  # an empty request names no model


def test_tritonclient_stream_works_unchanged(srv):
    got: queue.Queue = queue.Queue()
    c = tgrpc.InferenceServerClient(srv.grpc)
    try:
        c.start_stream(callback=lambda result, error: got.put((result, error)))
        inp = tgrpc.InferInput("input", list(IMAGES.shape), "FP32")
        inp.set_data_from_numpy(IMAGES)
        for i in range(4):
            c.async_stream_infer("resnet", [inp], request_id=f"t{i}",
                                 parameters={"slo_ms": 200})
        results = [got.get(timeout=30) for _ in range(4)]
        c.stop_stream()
    finally:
        c.close()
    assert all(err is None for _, err in results)
    ids = sorted(r.get_response().id for r, _ in results)
    assert ids == ["t0", "t1", "t2", "t3"]
    assert all(r.as_numpy("logits").shape == (2, 10) for r, _ in results)


def test_cancelled_stream_leaves_no_request_open(srv):
    """A client that goes away mid-stream: every request it had sent still ends in one
    terminal state on the server (answered or CANCELLED), none stays open."""
    pb = proto.pb2()
    router = srv.running.router
    ch = grpc.insecure_channel(srv.grpc)
    stub = proto.pb2_grpc().GRPCInferenceServiceStub(ch)
    gate = threading.Event()

    def requests():
        yield from (_request(pb, f"c{i}") for i in range(5))
        gate.wait(10)  # hold the stream open, then the client cancels it

    call = stub.ModelStreamInfer(requests(), timeout=30)
    first = next(call)
    assert first.infer_response.id.startswith("c")
    call.cancel()
    gate.set()
    ch.close()
    srv.call(_settle(router), timeout=30)
    assert router.open_requests == 0


async def _settle(router):
    import asyncio

    for _ in range(500):
        if router.open_requests == 0:
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("protocol", ["grpc", "grpc-stream"])
def test_loadgen_over_grpc_and_one_stream_answers_every_request(srv, protocol):
    import asyncio

    from superserve.bench.loadgen import LoadgenConfig, run_loadgen, summarize

    cfg = LoadgenConfig(url=srv.grpc, slo_ms=200.0, protocol=protocol, timeout_s=10.0)
    images = np.random.default_rng(2).random((8, 1, 28, 28), dtype=np.float32)
    labels = np.arange(8) % 10
    recs = asyncio.run(run_loadgen(cfg, np.linspace(0, 0.5, 120), images, labels))
    s = summarize(recs, cfg.slo_ms)
    assert s["requests"] == 120
    assert s["outcomes"]["completed"] == 120  # light load: all answered in time
