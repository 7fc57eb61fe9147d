"""Input validation by construction (issue 15, item 1): each bad-input class of the
conformance run, and its siblings, over REST (JSON and binary) and gRPC. One server (fake
pool, ephemeral 127.0.0.1 ports) for the module."""

from __future__ import annotations

import gzip
import json
import zlib

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as thttp

from conftest import ServerThread, synthetic_table
from superserve.runtime.fake import FakePool
from superserve.server import proto

IMG = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def srv():
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1),
                     max_body_bytes=400_000)
    try:
        yield s
    finally:
        s.close()


def body(data=None, shape=(1, 1, 28, 28), **params) -> dict:
    return {"inputs": [{"name": "input", "shape": list(shape), "datatype": "FP32",
                        "data": IMG.ravel().tolist() if data is None else data}],
            "parameters": params}


def post(srv, content: bytes, headers=None, path="/v2/models/resnet/infer"):
    return httpx.post(srv.http + path, content=content, timeout=10,
                      headers={"content-type": "application/json", **(headers or {})})


def post_json(srv, obj, headers=None):
    return post(srv, json.dumps(obj).encode(), headers)


def raw_json(srv, text: str):
    return post(srv, text.encode())


# ----------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("text,needle", [
    ("[" * 100_000 + "]" * 100_000, "deeper"),
    ('{"a": ' * 5000 + "1" + "}" * 5000, "deeper"),
    ('{"id": "' + "[" * 1000 + '", "inputs": 1' + "9" * 5000 + "}", "digits"),
    (json.dumps(body()).replace('"parameters": {}', '"parameters": {"slo_ms": '
                                + "9" * 400 + "}"), "digits"),
    (json.dumps(body()).replace("[0.", "[" + "7" * 400 + ", 0.", 1), "digits"),
    (('{"inputs": [{"name": "input", "shape": [1e400, 1, 28, 28], "datatype": "FP32", '
     '"data": []}]}'), "integers"),
])
def test_json_size_and_number_bounds_are_400(srv, text, needle):
    r = raw_json(srv, text)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]


@pytest.mark.parametrize("bad,kind", [("0.5", "a string"), (True, "a boolean"),
                                      (None, "null"), ({"x": 1}, "an object")])
def test_non_numbers_inside_fp32_data_are_400(srv, bad, kind):
    data = IMG.ravel().tolist()
    data[17] = bad
    r = post_json(srv, body(data))
    assert r.status_code == 400 and kind in r.json()["error"] and "17" in r.json()["error"]
    # nested data is checked the same way
    nested = IMG.tolist()
    nested[0][0][3][4] = bad
    r = post_json(srv, body(nested))
    assert r.status_code == 400 and kind in r.json()["error"]


def test_nested_data_in_shape_is_accepted_and_ragged_is_400(srv):
    assert post_json(srv, body(IMG.tolist(), slo_ms=500)).status_code == 200
    nested = IMG.tolist()
    nested[0][0][3] = nested[0][0][3][:-1]
    assert post_json(srv, body(nested)).status_code == 400
    r = post_json(srv, body([[1.0], 2.0]))
    assert r.status_code == 400


def test_fp32_range_and_slo_bounds(srv):
    data = IMG.ravel().tolist()
    data[0] = 1e39  # a finite JSON number that no FP32 can hold
    r = post_json(srv, body(data))
    assert r.status_code == 400 and "FP32 range" in r.json()["error"]
    for slo in (1e30, "1e400", "x" * 1000, True, 0, -1):
        r = post_json(srv, body(slo_ms=slo))
        assert r.status_code == 400 and "slo_ms" in r.json()["error"], slo
        assert len(r.json()["error"]) < 300  # messages never echo a payload whole


def test_binary_data_output_is_a_strict_boolean(srv):
    r = post_json(srv, body(binary_data_output="false", slo_ms=500))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    r = post_json(srv, body(binary_data_output="yes"))
    assert r.status_code == 400 and "binary_data_output" in r.json()["error"]
    r = post_json(srv, {**body(slo_ms=500),
                        "outputs": [{"name": "logits", "parameters": {"binary_data": "no"}}]})
    assert r.status_code == 400 and "binary_data" in r.json()["error"]
    r = post_json(srv, {**body(), "outputs": [{"name": "logits"}, {"name": "logits"}]})
    assert r.status_code == 400 and "twice" in r.json()["error"]
    r = post_json(srv, {**body(), "id": {"no": 1}})
    assert r.status_code == 400 and "`id`" in r.json()["error"]


# ----------------------------------------------------------------------------- binary
def _binary(head: dict, raw: bytes, extra: bytes = b"") -> tuple[bytes, dict]:
    h = json.dumps(head).encode()
    return h + raw + extra, {"Inference-Header-Content-Length": str(len(h)),
                             "content-type": "application/octet-stream"}


def test_binary_extension_sizes_and_trailing_bytes(srv):
    raw = IMG.tobytes()
    head = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                        "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"slo_ms": 500}}
    assert post(srv, *_binary(head, raw)).status_code == 200
    r = post(srv, *_binary(head, raw, b"junk"))
    assert r.status_code == 400 and "binary_data_size" in r.json()["error"]
    plain = json.dumps(body(slo_ms=500)).encode()
    r = post(srv, plain + b"trailing", {"Inference-Header-Content-Length": str(len(plain))})
    assert r.status_code == 400 and "follow the JSON header" in r.json()["error"]
    for hl in ("+5", "1e3", "-1", "99999999999999999999", "\u0665"):
        r = post(srv, plain, {"Inference-Header-Content-Length": hl.encode("utf-8")})
        assert r.status_code == 400, hl
    head["inputs"][0]["parameters"]["binary_data_size"] = True
    assert post(srv, *_binary(head, raw)).status_code == 400
    head["inputs"][0]["data"] = [0.0] * 784
    head["inputs"][0]["parameters"]["binary_data_size"] = len(raw)
    r = post(srv, *_binary(head, raw))
    assert r.status_code == 400 and "both" in r.json()["error"]


# ----------------------------------------------------------------------------- encoding
def test_content_encoding_is_decoded_or_refused(srv):
    plain = json.dumps(body(slo_ms=500)).encode()
    assert post(srv, gzip.compress(plain), {"content-encoding": "gzip"}).status_code == 200
    assert post(srv, zlib.compress(plain), {"content-encoding": "deflate"}).status_code == 200
    r = post(srv, plain, {"content-encoding": "gzip"})  # says gzip, is not
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    r = post(srv, gzip.compress(plain)[:-9], {"content-encoding": "gzip"})  # truncated
    assert r.status_code == 400
    r = post(srv, plain, {"content-encoding": "br"})
    assert r.status_code == 415 and "br" in r.json()["error"]
    bomb = gzip.compress(b"[" * 5_000_000)  # ~5 kB that decodes past the 400 kB limit
    r = post(srv, bomb, {"content-encoding": "gzip"})
    assert r.status_code == 413


def test_tritonclient_gzip_request_works(srv):
    c = thttp.InferenceServerClient(srv.http.removeprefix("http://"))
    try:
        inp = thttp.InferInput("input", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(IMG, binary_data=True)
        for algo in ("gzip", "deflate"):
            res = c.infer("resnet", [inp], parameters={"slo_ms": 500},
                          request_compression_algorithm=algo)
            assert res.as_numpy("logits").shape == (1, 10)
    finally:
        c.close()


# ----------------------------------------------------------------------------- methods
def test_wrong_method_is_405_with_allow(srv):
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        r = httpx.request(method, srv.http + "/v2/models/resnet/infer", timeout=10)
        assert r.status_code == 405 and r.headers["allow"] == "POST", method
        assert "POST" in r.json()["error"]
    r = httpx.post(srv.http + "/v2/health/live", timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    for method in ("POST", "PATCH", "OPTIONS"):  # unknown path: 404 in KServe's format
        r = httpx.request(method, srv.http + "/v2/nothing", timeout=10)
        assert r.status_code == 404 and "no such endpoint" in r.json()["error"], method
    r = httpx.request("TRACE", srv.http + "/metrics", timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    doc = httpx.get(srv.http + "/v2/openapi.json", timeout=10).json()
    assert "/v2/models/{model_name}/infer" in doc["paths"]


# ----------------------------------------------------------------------------- gRPC
def _grpc_infer(srv, req, timeout=5):
    ch = grpc.insecure_channel(srv.grpc)
    try:
        stub = proto.pb2_grpc().GRPCInferenceServiceStub(ch)
        return stub.ModelInfer(req, timeout=timeout)
    finally:
        ch.close()


def _grpc_req(**kw):
    pb = proto.pb2()
    req = pb.ModelInferRequest(model_name="resnet")
    t = req.inputs.add(name="input", datatype="FP32", shape=kw.pop("shape", [1, 1, 28, 28]))
    if kw.pop("raw", True):
        req.raw_input_contents.append(IMG.tobytes())
    for k, v in kw.items():
        getattr(t.contents, k).extend(v)
    return req


@pytest.mark.parametrize("kw,needle", [
    ({"raw": False, "fp32_contents": [0.5] * 700}, "784"),
    ({"fp32_contents": [0.5] * 784}, "both"),
    ({"raw": False, "int_contents": [1] * 784}, "int_contents"),
    ({"shape": [1, 1, 28, 27]}, "shape"),
    ({"shape": [2**62, 1, 28, 28]}, "limit"),
])
def test_grpc_same_rules_invalid_argument(srv, kw, needle):
    with pytest.raises(grpc.RpcError) as e:
        _grpc_infer(srv, _grpc_req(**kw))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in e.value.details()


def test_grpc_huge_slo_and_raw_size_and_duplicate_outputs(srv):
    req = _grpc_req()
    req.parameters["slo_ms"].int64_param = 2**62
    with pytest.raises(grpc.RpcError) as e:
        _grpc_infer(srv, req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "slo_ms" in e.value.details()
    req = _grpc_req()
    req.raw_input_contents[0] = IMG.tobytes() + b"\0\0\0\0"
    with pytest.raises(grpc.RpcError) as e:
        _grpc_infer(srv, req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    req = _grpc_req()
    req.outputs.add(name="logits")
    req.outputs.add(name="logits")
    with pytest.raises(grpc.RpcError) as e:
        _grpc_infer(srv, req)
    assert "twice" in e.value.details()


def test_grpc_deadline_is_the_slo_when_none_given():
    """No slo_ms / timeout: the call's remaining deadline is the SLO; slo_ms wins over it."""
    import asyncio

    from superserve.errors import DeadlineExceededError
    from superserve.server.codec import ModelIO
    from superserve.server.grpc_api import _Handlers

    seen = []

    class Service:
        io, model = ModelIO(), "resnet"

        def check_size(self, n): pass

        def check_model(self, name, version=""): pass

        def now(self): return 0.0

        async def infer(self, images, slo_s, arrival_s=None):
            seen.append(slo_s)
            raise DeadlineExceededError("stop here")

    class Context:
        def __init__(self, left): self.left = left

        def time_remaining(self): return self.left

    h = _Handlers(Service())
    raw = _grpc_req().SerializeToString()
    for ctx in (Context(0.3), Context(None), Context(-1.0)):
        with pytest.raises(DeadlineExceededError):
            asyncio.run(h.model_infer(raw, ctx))
    req = _grpc_req()
    req.parameters["slo_ms"].double_param = 20.0
    with pytest.raises(DeadlineExceededError):
        asyncio.run(h.model_infer(req.SerializeToString(), Context(0.3)))
    assert seen[0] == pytest.approx(0.3) and seen[1] is None and 0 < seen[2] < 1e-3
    assert seen[3] == pytest.approx(0.02)


def test_unexpected_errors_are_500_json_and_grpc_internal_never_unknown(srv):
    import asyncio

    from superserve.server.grpc_api import _wrap

    svc = srv.running.service

    async def boom(*a, **k):
        raise RuntimeError("a bug")

    def boom_now(*a, **k):
        raise RuntimeError("a bug")

    # instance attributes shadow the methods for this test only (submit: the HTTP fast lane)
    svc.infer, svc.submit = boom, boom_now
    try:
        r = post_json(srv, body(slo_ms=500))
        assert r.status_code == 500 and r.json() == {"error": "internal error: RuntimeError"}
        with pytest.raises(grpc.RpcError) as e:
            _grpc_infer(srv, _grpc_req())
        assert e.value.code() == grpc.StatusCode.INTERNAL and "RuntimeError" in e.value.details()
    finally:
        del svc.infer, svc.submit
    assert post_json(srv, body(slo_ms=500)).status_code == 200

    class Ctx:
        async def abort(self, code, details):
            self.code, self.details = code, details
            raise grpc.aio.AbortError()

    ctx = Ctx()
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(_wrap(boom)(b"", ctx))
    assert ctx.code == grpc.StatusCode.INTERNAL


def test_a_grpc_call_already_over_is_not_answered_again():
    """A refusal that lands when the call's deadline has passed (the router caps a request's
    SLO at it) is not sent: grpc's core has ended the call, and a status sent now fails
    there with an ERROR per call. A live call still gets its status."""
    import asyncio

    from superserve.errors import DeadlineExceededError
    from superserve.server.grpc_api import _wrap

    async def late(*a, **k):
        raise DeadlineExceededError("missed its deadline in the queue")

    class Ctx:
        code = None

        def __init__(self, left, done=False):
            self.left, self._done = left, done

        def done(self):
            return self._done

        def cancelled(self):
            return False

        def time_remaining(self):
            return self.left

        async def abort(self, code, details):
            self.code = code
            raise grpc.aio.AbortError()

    for ctx in (Ctx(-0.001), Ctx(None, done=True)):
        with pytest.raises(asyncio.CancelledError):
            asyncio.run(_wrap(late)(b"", ctx))
        assert ctx.code is None
    live = Ctx(0.5)
    with pytest.raises(grpc.aio.AbortError):
        asyncio.run(_wrap(late)(b"", live))
    assert live.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_bool_prescan_never_misses_a_boolean_in_data():
    """`may_hold_bools` may say yes wrongly (then the element-wise path runs), never no
    wrongly: a boolean anywhere in `data`, whatever else the request holds."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from superserve.server.validation import may_hold_bools

    leaf = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-9, 9),
                     st.booleans(), st.text(max_size=4), st.none())
    data = st.lists(st.one_of(leaf, st.lists(leaf, max_size=3)), max_size=12)
    extra = st.dictionaries(st.sampled_from(["parameters", "id", "outputs", "x"]),
                            st.one_of(st.text(max_size=6), st.booleans(),
                                      st.dictionaries(st.text(max_size=4), st.booleans(),
                                                      max_size=2)), max_size=3)

    def has_bool(v):
        return isinstance(v, bool) or isinstance(v, list) and any(map(has_bool, v))

    @settings(max_examples=400, deadline=None)
    @given(data, extra, st.booleans())
    def check(values, more, data_first):
        tensor = {"data": values, **more} if data_first else {**more, "data": values}
        head = json.dumps({"inputs": [tensor], **more}).encode()
        if has_bool(values):
            assert may_hold_bools(head)

    check()
    plain = json.dumps({"inputs": [{"name": "input", "data": [0.5, 1e-05, -2.0]}],
                        "parameters": {"slo_ms": 50}}).encode()
    assert not may_hold_bools(plain)  # the common request takes the fast path


def _decode_both(head: bytes, monkeypatch):
    """decode_http's outcome (images, or the error message) with the flat-array fast path
    and without it."""
    from superserve.errors import SuperServeError
    from superserve.server import validation
    from superserve.server.codec import ModelIO, decode_http

    io = ModelIO(image_shape=(1, 2, 2))

    def once():
        try:
            d = decode_http(head, None, io)
            return ("ok", d.images.tolist(), d.slo_s, d.request_id)
        except SuperServeError as e:
            return ("error", type(e).__name__, str(e))

    fast = once()
    with monkeypatch.context() as m:
        m.setattr(validation, "simdjson", None)
        plain = once()
    return fast, plain


def test_flat_data_fast_path_decodes_exactly_as_the_plain_path(monkeypatch):
    """The simdjson fast path (`split_flat_data`) never changes what a request decodes to:
    the same images, or the same error, whatever `data` holds (flat or nested numbers,
    booleans, strings, nulls, the wrong count) and whatever else names `data`."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    num = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32),
                    st.integers(-(2 ** 70), 2 ** 70))
    leaf = st.one_of(num, num, num, st.booleans(), st.text(max_size=3), st.none())
    data = st.one_of(st.lists(num, min_size=3, max_size=5),
                     st.lists(st.one_of(leaf, st.lists(leaf, max_size=2)), max_size=5))
    extra = st.dictionaries(st.sampled_from(["parameters", "id", "data", "x"]),
                            st.one_of(st.text(max_size=6), st.just("data"),
                                      st.just({"slo_ms": 40}), st.lists(num, max_size=2)),
                            max_size=2)

    @settings(max_examples=300, deadline=None)
    @given(data, extra, st.booleans(), st.booleans())
    def check(values, more, spaced, escaped):
        doc = {"inputs": [{"name": "input", "shape": [1, 1, 2, 2], "datatype": "FP32",
                           "data": values}], **more}
        head = json.dumps(doc, separators=None if spaced else (",", ":"),
                          ensure_ascii=escaped).encode()
        fast, plain = _decode_both(head, monkeypatch)
        assert fast == plain

    check()


def test_flat_data_fast_path_takes_the_usual_request_only():
    from superserve.server.validation import split_flat_data

    usual = json.dumps(body(IMG.ravel().tolist(), slo_ms=50)).encode()
    rest, arr = split_flat_data(usual)
    assert np.array_equal(arr, IMG.ravel().astype(np.float64))
    assert json.loads(rest)["inputs"][0]["data"] == []
    assert json.loads(rest)["parameters"] == {"slo_ms": 50}
    for head in [
        b'{"inputs":[{"data":[[1,2],[3,4]]}]}',  # nested: shape checked on the plain path
        b'{"inputs":[{"data":[1,true,2,3]}]}',  # a boolean: an error there
        b'{"inputs":[{"data":[1,null,2,3]}]}',
        b'{"inputs":[{"data":["1",2,3,4]}]}',
        b'{"inputs":[{"data":[1,2,3,1e400]}]}',  # out of range: the plain path says so
        b'{"inputs":[{"data":[1,2,3,4]}],"id":"data"}',  # `"data"` twice
        b'{"id":"data","inputs":[{"data":[1,2,3,4]}]}',  # ... the first not a key
        b'{"x":{"data":[9]},"inputs":[{"data":[1,2,3,4]}]}',  # ... the first another array
        b'{"inputs":[{"data":[1,2,3,4]}],"id":"a\\"b"}',  # a backslash: escapes elsewhere
        b'{"inputs":[{"data":{"a":1}}]}',
        b'{"inputs":[{"data": 5}]}',
        b'{"inputs":[{"data":[1,2,3,4}]}',  # truncated
    ]:
        assert split_flat_data(head) is None, head


def test_value_checks_take_the_exact_path_when_the_quick_one_cannot_decide():
    """check_images decides float64 input by one sum of squares; a sum too large for that
    (valid values near the FP32 limit) or one that overflows (values far outside it) goes
    to the exact checks, which accept the first, refuse the second, and warn of nothing."""
    import warnings

    from superserve.errors import InvalidInputError
    from superserve.server.codec import ModelIO
    from superserve.server.validation import check_images

    io = ModelIO()
    shape = [1, 1, 28, 28]
    near = np.full(784, 3.0e38)  # each value fits FP32; their squares sum past 1.2e77
    out = check_images(near, shape, io, shape_checked=True)
    assert out.dtype == np.float32 and out.shape == (1, 1, 28, 28)
    assert np.all(out == np.float32(3.0e38))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sum of squares overflows, silently
        for bad, said in ((1e200, "FP32 range"), (-1e39, "FP32 range"), (np.nan, "non-finite"),
                          (np.inf, "FP32 range")):
            a = np.zeros(784)
            a[7] = bad
            with pytest.raises(InvalidInputError, match=said):
                check_images(a, shape, io, shape_checked=True)
    ints = np.arange(784, dtype=np.int64) * 10 ** 15  # squares wrap in int64: not used
    assert check_images(ints, shape, io).dtype == np.float32
