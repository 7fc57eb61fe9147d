"""Slow clients (issue 15, item 4): a request whose headers trickle in, a body that never
finishes, and a connection that sends nothing are each answered 408 and closed once the read
timeout passes; the server keeps serving others."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from conftest import ServerThread, synthetic_table
from superserve.runtime.fake import FakePool

TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def srv():
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1),
                     request_read_timeout_s=TIMEOUT_S)
    try:
        yield s
    finally:
        s.close()


def _until_closed(sock: socket.socket, trickle: list[bytes], every_s: float) -> tuple[bytes, float]:
    """Send `trickle` a piece every `every_s`, read until the server closes; (reply, seconds)."""
    t0 = time.monotonic()
    sock.settimeout(every_s)
    got = b""
    pieces = list(trickle)
    while time.monotonic() - t0 < 10:
        if pieces:
            try:
                sock.sendall(pieces.pop(0))
            except OSError:
                break
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return got, time.monotonic() - t0


@pytest.mark.parametrize("trickle", [
    [],  # connects, sends nothing
    [b"GET /v2/health/live HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 40,  # headers trickle
    [b"POST /v2/models/resnet/infer HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n{"]
    + [b" "] * 40,  # a body that never finishes
])
def test_slow_clients_get_408_and_are_closed(srv, trickle):
    with socket.create_connection(("127.0.0.1", srv.running.http_port), timeout=5) as s:
        reply, took = _until_closed(s, trickle, 0.1)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"too slowly" in reply
    assert TIMEOUT_S * 0.8 < took < TIMEOUT_S + 3.0
    assert httpx.get(f"{srv.http}/v2/health/live", timeout=5).status_code == 200


def test_idle_keep_alive_is_not_a_slow_request(srv):
    """Between requests the keep-alive timeout (30 s) governs, not the read timeout."""
    with httpx.Client(timeout=5) as c:
        r1 = c.get(f"{srv.http}/v2/health/live")
        time.sleep(TIMEOUT_S + 0.3)
        r2 = c.get(f"{srv.http}/v2/health/live")
    assert r1.status_code == r2.status_code == 200
    assert r2.extensions["network_stream"] is r1.extensions["network_stream"]  # same socket


def test_a_slow_request_after_a_fast_one_gets_its_own_full_timeout(srv):
    """One deadline per connection, enforced by a timer left armed across requests: a
    request that starts trickling late in the first one's window still gets the whole read
    timeout from its own first byte (not the leftover of the window), and then its 408."""
    with socket.create_connection(("127.0.0.1", srv.running.http_port), timeout=5) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n\r\n")
        first = b""
        while b"}" not in first:  # the whole first response (headers and body may part)
            chunk = s.recv(4096)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        time.sleep(TIMEOUT_S * 0.6)  # the connection's first timer is due in ~0.4 x timeout
        reply, took = _until_closed(s, [b"GET /v2/health/live HTTP/1.1\r\n"]
                                    + [b"X-Slow: 1\r\n"] * 40, 0.05)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert TIMEOUT_S * 0.8 < took < TIMEOUT_S + 3.0


KEEP_ALIVE_S = 0.5


@pytest.fixture(scope="module")
def short_keep_alive():
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1),
                     request_read_timeout_s=5.0, keep_alive_timeout_s=KEEP_ALIVE_S)
    try:
        yield s
    finally:
        s.close()


def _get_on(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n\r\n")
    got = b""
    while b"}" not in got:  # the whole response (headers and body may part)
        chunk = sock.recv(4096)
        assert chunk, got
        got += chunk
    return got


def test_idle_keep_alive_connection_is_closed_after_its_timeout(short_keep_alive):
    """The connection's one timer closes it once idle for keep_alive_timeout_s (no uvicorn
    timer per response): quietly, with no 408, since no request was being read."""
    with socket.create_connection(("127.0.0.1", short_keep_alive.running.http_port),
                                  timeout=5) as s:
        assert _get_on(s).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        s.settimeout(KEEP_ALIVE_S + 5)
        rest = s.recv(4096)
        took = time.monotonic() - t0
    assert rest == b""  # closed, nothing said
    assert KEEP_ALIVE_S * 0.8 < took < KEEP_ALIVE_S + 3.0


def test_a_busy_keep_alive_connection_stays_open(short_keep_alive):
    """Each response moves the idle deadline: requests every 0.6 x keep-alive for 3 x
    keep-alive all go over one socket (the timer fires early, finds it busy, re-arms)."""
    with socket.create_connection(("127.0.0.1", short_keep_alive.running.http_port),
                                  timeout=5) as s:
        for _ in range(5):
            assert _get_on(s).startswith(b"HTTP/1.1 200")
            time.sleep(KEEP_ALIVE_S * 0.6)
        assert _get_on(s).startswith(b"HTTP/1.1 200")


def test_keep_alive_timeout_is_validated():
    from superserve.errors import ConfigError
    from superserve.server.config import ServeConfig

    for bad in (0, -1.0, 4000.0, float("nan")):
        with pytest.raises(ConfigError, match="keep_alive_timeout_s"):
            ServeConfig(keep_alive_timeout_s=bad)


def test_uvicorn_keep_alive_is_replaced_with_this_uvicorn():
    """The guard replaces uvicorn's per-response keep-alive timer only where uvicorn's
    method is the one it knows (else uvicorn's runs unchanged): with the installed uvicorn,
    it does, so a change there shows up here rather than as lost CPU."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from superserve.server.limits import _keeps_alive_per_request

    assert _keeps_alive_per_request(HttpToolsProtocol)
    assert not _keeps_alive_per_request(object)
