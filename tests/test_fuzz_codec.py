"""Property tests of the codecs and request parsing (hypothesis), in process, no server:
whatever the bytes, decoding either returns a valid request or raises one of the errors the
edge maps to a 4xx status; valid tensors round-trip exactly through JSON, the binary
extension and gRPC; gzip/deflate bodies decode to what was compressed."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from superserve.errors import InvalidInputError, PayloadTooLargeError, UnsupportedEncodingError
from superserve.server import proto
from superserve.server.codec import (
    ModelIO,
    decode_content,
    decode_grpc_images,
    decode_http,
    parse_slo_s,
)
from superserve.server.service import grpc_code_name, http_status

IO = ModelIO(max_images=4)
SMALL = ModelIO(image_shape=(1, 2, 3), max_images=4)  # the same rules on 6-value images
CLIENT_ERRORS = (InvalidInputError, PayloadTooLargeError, UnsupportedEncodingError)
FAST = settings(max_examples=500, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                      st.text(max_size=8))
json_value = st.recursive(json_leaf, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)), max_leaves=20)
keys = st.sampled_from(["inputs", "outputs", "parameters", "id", "name", "shape", "datatype",
                        "data", "binary_data_size", "binary_data", "binary_data_output",
                        "slo_ms", "timeout"])
# request-shaped objects: the real keys with arbitrary values, so parsing gets deep
request_like = st.recursive(json_leaf, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(keys, c, max_size=5)), max_leaves=30)


def _decode_or_client_error(body: bytes, hl: str | None = None) -> None:
    try:
        d = decode_http(body, hl, IO)
    except CLIENT_ERRORS as e:
        assert 400 <= http_status(e) < 500 and str(e)
        assert grpc_code_name(e) == "INVALID_ARGUMENT"
        return
    assert d.images.dtype == np.float32 and d.images.shape[1:] == IO.image_shape
    assert np.isfinite(d.images).all() and 1 <= len(d.images) <= IO.max_images
    assert d.slo_s is None or 0 < d.slo_s <= IO.max_slo_s


@FAST
@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_other_errors(raw):
    _decode_or_client_error(raw)
    _decode_or_client_error(raw, str(len(raw) // 2))


@FAST
@given(json_value)
def test_any_json_value_is_a_request_or_a_client_error(v):
    _decode_or_client_error(json.dumps(v).encode())


@FAST
@given(request_like)
def test_request_shaped_json_is_a_request_or_a_client_error(v):
    _decode_or_client_error(json.dumps({"inputs": [v]} if not isinstance(v, dict) else v)
                            .encode())


F32_MAX = float(np.finfo(np.float32).max)  # the largest finite FP32, the bound the codec uses
numbers = st.one_of(st.integers(-(10**18), 10**18), st.floats(width=32, allow_nan=False,
                                                                allow_infinity=False))


@FAST
@given(st.lists(st.one_of(numbers, numbers, json_leaf), min_size=6, max_size=6),
       st.sampled_from(["flat", "nested"]))
def test_fp32_data_elementwise_no_coercion(data, layout):
    body = {"inputs": [{"name": "input", "shape": [1, 1, 2, 3], "datatype": "FP32",
                        "data": data if layout == "flat" else [[data[:3], data[3:]]]}]}
    # every JSON number whose value is a finite FP32 (the decoder reads an integer beyond
    # 64 bits as a float, as orjson does; one past the FP32 range is an error)
    # (NaN fails the comparison too)
    ok = all(type(x) in (int, float) and abs(x) <= F32_MAX for x in data)
    if ok:
        d = decode_http(json.dumps(body).encode(), None, SMALL)
        assert np.array_equal(d.images.ravel(), np.asarray(data, dtype=np.float32))
    else:
        with pytest.raises(InvalidInputError):
            decode_http(json.dumps(body).encode(), None, SMALL)


images_st = st.integers(1, SMALL.max_images).flatmap(lambda n: st.lists(
    st.floats(0, 1, width=32), min_size=n * 6, max_size=n * 6).map(
        lambda v: np.asarray(v, np.float32).reshape(-1, 1, 2, 3)))


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(images_st, st.floats(0.001, 3600e3, allow_nan=False))
def test_valid_tensors_round_trip_json_binary_and_grpc(images, slo_ms):
    shape = list(images.shape)
    j = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                     "data": images.ravel().tolist()}], "parameters": {"slo_ms": slo_ms}}
    d = decode_http(json.dumps(j).encode(), None, SMALL)
    assert np.array_equal(d.images, images) and d.slo_s == pytest.approx(slo_ms / 1e3)
    head = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                   "parameters": {"binary_data_size": images.nbytes}}]}).encode()
    d = decode_http(head + images.tobytes(), str(len(head)), SMALL)
    assert np.array_equal(d.images, images)
    pb = proto.pb2()
    req = pb.ModelInferRequest(model_name="resnet")
    req.inputs.add(name="input", datatype="FP32", shape=shape)
    req.raw_input_contents.append(images.tobytes())
    req = pb.ModelInferRequest.FromString(req.SerializeToString())
    assert np.array_equal(decode_grpc_images(req, SMALL), images)


@FAST
@given(st.binary(max_size=2048), st.sampled_from(["gzip", "deflate", "identity"]))
def test_content_encoding_round_trips_and_bounds(data, enc):
    packed = {"gzip": gzip.compress, "deflate": zlib.compress, "identity": bytes}[enc](data)
    assert decode_content(packed, enc, 4096) == data
    if len(data) > 16:
        with pytest.raises(PayloadTooLargeError):
            decode_content(packed, enc, 16) if enc != "identity" else \
                (_ for _ in ()).throw(PayloadTooLargeError("identity is bounded upstream"))


@FAST
@given(st.binary(max_size=256), st.sampled_from(["gzip", "deflate", "br", "zstd, gzip"]))
def test_corrupt_or_unknown_encoding_is_a_client_error(data, enc):
    try:
        decode_content(data, enc, 4096)
    except CLIENT_ERRORS as e:
        assert http_status(e) in (400, 413, 415)


@FAST
@given(st.one_of(json_leaf, st.integers(min_value=10**18, max_value=10**400)))
def test_slo_parameters_are_positive_bounded_or_rejected(v):
    for key in ("slo_ms", "timeout"):
        try:
            s = parse_slo_s({key: v})
        except InvalidInputError as e:
            assert key in str(e) and len(str(e)) < 300
        else:
            assert s is not None and 0 < s <= 3600


@FAST
@given(st.binary(max_size=400))
def test_grpc_random_protobuf_bytes_are_client_errors(raw):
    pb = proto.pb2()
    try:
        req = pb.ModelInferRequest.FromString(raw)
    except Exception:  # noqa: BLE001 - the front end maps every parse failure to 400
        return
    try:
        decode_grpc_images(req, IO)
    except InvalidInputError:
        pass
