"""The infer route answered by the HTTP protocol itself (server/direct_http.py), over raw
sockets: one write per response, pipelined requests answered in order, keep-alive and
`Connection: close`, an oversized body refused while it arrives, and the requests that take
uvicorn's ASGI route instead (`Expect: 100-continue`, an escaped path) answered the same way."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from conftest import ServerThread, synthetic_table
from superserve.runtime.fake import FakePool
from superserve.server.direct_http import DirectInfer, direct_protocol

IMAGE = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                               "data": IMAGE.ravel().tolist()}],
                   "parameters": {"slo_ms": 500}}).encode()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    token = tmp_path_factory.mktemp("direct") / "tokens"
    token.write_text("secret-token-0123456789abcdef\n")
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1),
                     max_body_bytes=100_000, auth_token_file=str(token),
                     auth_open_health=True)
    try:
        yield s
    finally:
        s.close()


AUTH = b"authorization: Bearer secret-token-0123456789abcdef\r\n"


def request(path: bytes = b"/v2/models/resnet/infer", body: bytes = BODY,
            extra: bytes = AUTH) -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            + extra + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def read_response(f) -> tuple[int, dict[str, str], bytes]:
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers["content-length"]))
    return status, headers, body


def connect(srv) -> socket.socket:
    port = srv.running.http_port
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def test_the_protocol_answers_infer_without_asgi(srv):
    proto_cls = srv.running._uvicorn.config.http
    assert issubclass(proto_cls, object) and proto_cls.__name__ == "GuardedProtocol"
    assert any(c.__name__ == "DirectInferProtocol" for c in proto_cls.__mro__)
    with connect(srv) as s, s.makefile("rb") as f:
        s.sendall(request())
        status, headers, body = read_response(f)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["model_name"] == "resnet" and doc["parameters"]["deadline_met"] is True
    assert headers["content-type"] == "application/json" and "date" in headers


def test_pipelined_requests_are_answered_in_order_on_one_connection(srv):
    ids = [f"req-{i}" for i in range(5)]
    bodies = []
    for rid in ids:
        doc = json.loads(BODY)
        doc["id"] = rid
        bodies.append(json.dumps(doc).encode())
    # all five in one write: the parser sees them in one data_received
    with connect(srv) as s, s.makefile("rb") as f:
        s.sendall(b"".join(request(body=b) for b in bodies))
        got = [json.loads(read_response(f)[2])["id"] for _ in ids]
    assert got == ids


def test_keep_alive_then_connection_close(srv):
    with connect(srv) as s, s.makefile("rb") as f:
        for _ in range(3):
            s.sendall(request())
            assert read_response(f)[0] == 200
        s.sendall(request(extra=AUTH + b"connection: close\r\n"))
        status, headers, _ = read_response(f)
        assert status == 200 and headers.get("connection") == "close"
        assert f.read() == b""  # the server closed it


def test_direct_route_errors_are_kserve_errors(srv):
    with connect(srv) as s, s.makefile("rb") as f:
        s.sendall(request(extra=b""))  # no token
        status, headers, body = read_response(f)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert "error" in json.loads(body)
        s.sendall(request(body=b'{"inputs": [}'))
        status, _, body = read_response(f)
        assert status == 400 and "JSON" in json.loads(body)["error"]
        s.sendall(request(path=b"/v2/models/nope/infer"))
        assert read_response(f)[0] == 404
        s.sendall(request())  # the connection still serves
        assert read_response(f)[0] == 200


def test_an_oversized_body_is_refused_before_it_is_all_read(srv):
    with connect(srv) as s, s.makefile("rb") as f:
        big = b"x" * 300_000
        head = request(body=big)[: -len(big)]
        s.sendall(head + big[:1000])  # the declared length is over the limit already
        status, _, body = read_response(f)
    assert status == 413 and "exceeds the limit" in json.loads(body)["error"]


def test_expect_continue_and_escaped_paths_take_the_asgi_route(srv):
    with connect(srv) as s, s.makefile("rb") as f:
        s.sendall(request(path=b"/v2/models/res%6Eet/infer"))
        status, _, body = read_response(f)
        assert status == 200, body
        head = request(extra=AUTH + b"expect: 100-continue\r\n")[: -len(BODY)]
        s.sendall(head)
        assert f.readline().startswith(b"HTTP/1.1 100")
        f.readline()
        s.sendall(BODY)
        assert read_response(f)[0] == 200


def test_a_client_that_leaves_mid_request_ends_it_as_cancelled(srv):
    router = srv.running.router
    before = router.stats.terminal.copy()
    slow = json.loads(BODY)
    # a body that never finishes: the request is not admitted, nothing is computed
    with connect(srv) as s:
        s.sendall(request(body=json.dumps(slow).encode())[:-10])
    import time

    time.sleep(0.3)
    assert sum(router.stats.terminal.values()) == sum(before.values())


def test_direct_protocol_keeps_uvicorns_cycle_interface():
    """What uvicorn's protocol reads from its cycle, DirectInfer has."""
    for name in ("scope", "body", "more_body", "message_event", "response_complete",
                 "disconnected", "keep_alive", "response_started", "run_asgi"):
        assert name in DirectInfer.__slots__ or hasattr(DirectInfer, name), name
    assert callable(direct_protocol)


def test_the_fast_lane_takes_only_small_plain_bodies():
    from superserve.server.direct_http import FAST_LANE_MAX_BYTES, _small

    assert _small([(b"content-length", b"5940")])
    assert not _small([(b"content-length", str(FAST_LANE_MAX_BYTES + 1).encode())])
    assert not _small([(b"content-length", b"100"), (b"content-encoding", b"gzip")])
    assert not _small([(b"transfer-encoding", b"chunked")])
    assert not _small([])


def test_gzip_and_large_bodies_take_the_task_path_and_still_answer(srv):
    import gzip

    with connect(srv) as s, s.makefile("rb") as f:
        z = gzip.compress(BODY)
        s.sendall(request(body=z, extra=AUTH + b"content-encoding: gzip\r\n"))
        assert read_response(f)[0] == 200
        many = np.random.default_rng(2).random((16, 1, 28, 28), dtype=np.float32)
        big = json.dumps({"inputs": [{"name": "input", "shape": [16, 1, 28, 28],
                                      "datatype": "FP32", "data": many.ravel().tolist()}]}
                         ).encode()
        assert len(big) > 65536
        s.sendall(request(body=big))
        status, _, body = read_response(f)
        assert status == 413  # this server's limit is 100,000 bytes


def test_a_large_body_that_trickles_in_takes_the_task_path(srv):
    import time

    images = np.random.default_rng(3).random((25, 1, 28, 28), dtype=np.float32)
    raw = images.tobytes()
    head = json.dumps({"inputs": [{"name": "input", "shape": [25, 1, 28, 28],
                                   "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"slo_ms": 5000}}).encode()  # its clock runs meanwhile
    body = head + raw
    assert 65536 < len(body) < 100_000  # over the fast lane, under this server's limit
    msg = request(body=body, extra=AUTH + b"inference-header-content-length: "
                  + str(len(head)).encode() + b"\r\n")
    with connect(srv) as s, s.makefile("rb") as f:
        cut = len(msg) - len(body) + 1000
        for part in (msg[:cut], msg[cut:cut + 40_000], msg[cut + 40_000:]):
            s.sendall(part)
            time.sleep(0.05)  # the handler waits for the rest of the body
        status, _, out = read_response(f)
    assert status == 200, out
    assert json.loads(out)["outputs"][0]["shape"][0] == 25


def test_the_installed_uvicorn_supports_the_direct_route():
    """The direct route leans on uvicorn's protocol internals; with a uvicorn that moved
    them the server falls back to ASGI (and says so). This uvicorn must still support it."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from superserve.server.direct_http import uvicorn_supports_direct

    assert uvicorn_supports_direct(HttpToolsProtocol)
    assert not uvicorn_supports_direct(object)
