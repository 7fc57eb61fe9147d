"""The load generator's own HTTP/1.1 client against scripted 127.0.0.1 servers: every way a
response can go wrong ends the request in one outcome, with a message."""

import asyncio
import json

import numpy as np

from superserve.bench.loadgen import LoadgenConfig, _RawHttpClient, run_loadgen, summarize


def _ok_body(pred: int) -> bytes:
    return json.dumps({"model_name": "resnet", "outputs": [
        {"name": "predicted", "datatype": "INT64", "shape": [1], "data": [pred]}],
        "parameters": {"subnet_id": 4, "subnet_accuracy": 0.96, "batch_size": 2,
                       "queue_ms": 1.5, "service_ms": 2.5, "deadline_met": True}}).encode()


def _header(head: bytes, name: str) -> int:
    return int(next(ln for ln in head.decode().split("\r\n")
                    if ln.lower().startswith(name + ":")).split(":", 1)[1])


def _response(status: int, body: bytes, reason: str = "X") -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body


async def _serve(behaviour, seen: list):
    """A server that reads one whole request (headers + content-length body) at a time and
    answers with behaviour(index, head, body) -> bytes | None (None: never answer) or the
    string 'close' (drop the connection)."""
    count = 0

    async def handle(reader, writer):
        nonlocal count
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.readexactly(_header(head, "content-length"))
                seen.append((head, body))
                out = behaviour(count, head, body)
                count += 1
                if out == "close":
                    writer.close()
                    return
                if out is not None:
                    writer.write(out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _run(behaviour, n=6, timeout_s=0.5):
    images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    labels = np.array([1, 2, 3, 4])
    seen: list = []

    async def main():
        server, port = await _serve(behaviour, seen)
        cfg = LoadgenConfig(url=f"http://127.0.0.1:{port}", slo_ms=40, protocol="http",
                            timeout_s=timeout_s, max_duration_s=10)
        try:
            return await run_loadgen(cfg, np.linspace(0, 0.05, n), images, labels)
        finally:
            server.close()

    return asyncio.run(main()), seen, images


def test_binary_request_and_json_response_round_trip():
    recs, seen, images = _run(lambda i, h, b: _response(200, _ok_body(3)))
    assert all(r.outcome == "completed" and r.status == "200" for r in recs)
    assert [r.subnet_id for r in recs] == [4] * 6 and recs[0].batch_size == 2
    assert recs[0].queue_ms == 1.5 and recs[0].service_ms == 2.5
    assert sum(r.correct for r in recs) == sum(r.label == 3 for r in recs)
    head, body = seen[0]
    assert head.startswith(b"POST /v2/models/resnet/infer HTTP/1.1\r\n")
    hlen = _header(head, "inference-header-content-length")
    req = json.loads(body[:hlen])
    assert req["parameters"] == {"slo_ms": 40}
    assert req["inputs"][0]["shape"] == [1, 1, 28, 28]
    assert req["inputs"][0]["parameters"]["binary_data_size"] == 784 * 4 == len(body) - hlen
    sent = np.frombuffer(body[hlen:], dtype="<f4").reshape(1, 1, 28, 28)
    assert any(np.array_equal(sent[0], im) for im in images)


def test_error_statuses_map_to_outcomes_with_messages():
    codes = [429, 503, 504, 400, 500, 200]

    def answer(i, h, b):
        c = codes[i % len(codes)]
        return _response(c, _ok_body(1) if c == 200 else b'{"error": "why %d"}' % c)

    recs, _, _ = _run(answer)
    by_status = {r.status: r for r in recs}
    assert by_status["429"].outcome == "rejected" and by_status["503"].outcome == "rejected"
    assert by_status["504"].outcome == "dropped_deadline"
    assert by_status["400"].outcome == "failed" and "why 400" in by_status["400"].message
    assert by_status["500"].outcome == "failed"
    assert by_status["200"].outcome == "completed"


def test_no_answer_times_out_as_failed_and_later_requests_still_go_out():
    recs, seen, _ = _run(lambda i, h, b: None if i == 0 else _response(200, _ok_body(1)),
                         timeout_s=0.3)
    assert recs[0].outcome == "failed" and "timeout" in recs[0].message
    assert recs[0].latency_ms >= 300
    assert all(r.outcome == "completed" for r in recs[1:])
    assert len(seen) == 6


def test_closed_connection_and_garbage_are_failed_not_lost():
    def answer(i, h, b):
        if i == 1:
            return "close"
        if i == 2:
            return b"this is not http\r\n\r\n"
        return _response(200, _ok_body(1))

    recs, _, _ = _run(answer, n=8)
    s = summarize(recs, 40)
    assert s["requests"] == 8 and sum(s["outcomes"].values()) == 8
    failed = [r for r in recs if r.outcome == "failed"]
    assert len(failed) == 2
    assert any("closed" in r.message for r in failed)
    assert any("malformed" in r.message for r in failed)


def test_connections_are_reused():
    async def main():
        peers = set()

        async def handle(reader, writer):
            peers.add(writer.get_extra_info("peername"))
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    n = _header(head, "content-length")
                    await reader.readexactly(n)
                    writer.write(_response(200, _ok_body(0)))
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        cfg = LoadgenConfig(url=f"127.0.0.1:{port}", protocol="http", timeout_s=2)
        client = _RawHttpClient(cfg)
        images = np.zeros((1, 1, 28, 28), dtype=np.float32)
        recs = await run_loadgen(cfg, np.arange(20) * 0.01, images, np.array([0]),
                                 client=client)
        server.close()
        return recs, peers

    recs, peers = asyncio.run(main())
    assert all(r.outcome == "completed" for r in recs)
    # opened up front for the most requests in flight at once (arrivals within one SLO: 6),
    # then reused: 20 requests never open a 7th
    assert len(peers) == 6
