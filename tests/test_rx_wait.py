"""The kernel's socket-buffer wait (server/rx_wait.py): read from real loopback TCP sockets,
and a request's clock moved back by it in a live server (the deadline counts from when the
bytes reached the kernel, not from when a busy loop read them)."""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

import numpy as np
import pytest

from conftest import socket_wait_server
from superserve.server import rx_wait

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux's")


def _pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()
    return srv, c, s


@linux
def test_the_wait_is_the_age_of_the_bytes_waiting_to_be_read():
    srv, c, s = _pair()
    try:
        wait = rx_wait.socket_wait_reader(s)
        assert wait is not None
        c.sendall(b"x" * 1000)
        time.sleep(0.06)
        w = wait()
        assert s.recv(4096)
        # scheduler ticks (1-10 ms) either way; a loaded machine only sleeps longer
        assert 0.045 <= w <= 5.0
        c.sendall(b"y")
        deadline = time.monotonic() + 5
        while not s.recv(16, socket.MSG_PEEK) and time.monotonic() < deadline:
            pass
        assert wait() < w  # the newest segment's age, not the first one's
    finally:
        for x in (c, s, srv):
            x.close()


@linux
def test_a_closed_socket_reads_as_no_wait():
    srv, c, s = _pair()
    wait = rx_wait.socket_wait_reader(s)
    assert wait is not None
    s.close()
    assert wait() == 0.0
    c.close()
    srv.close()


def test_where_the_kernel_does_not_say_there_is_no_reader():
    a, b = socket.socketpair()  # a unix socket: no TCP_INFO
    try:
        assert rx_wait.socket_wait_reader(a) is None
    finally:
        a.close()
        b.close()
    assert rx_wait.socket_wait_reader(None) is None
    assert rx_wait.socket_wait_reader(object()) is None


IMAGE = np.zeros((1, 1, 28, 28), np.float32)
BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                               "data": IMAGE.ravel().tolist()}],
                   "parameters": {"slo_ms": 100}})


@pytest.mark.parametrize("socket_wait,want", [(True, 504), (False, 200)])
def test_a_request_whose_bytes_waited_past_its_slo_is_a_miss_on_arrival(monkeypatch,
                                                                        socket_wait, want):
    """A request with a 100 ms SLO whose bytes (the kernel says) waited 0.3 s before the loop
    read them (a stand-in for a busy loop): with the socket wait its clock starts 0.3 s before
    the read, past its deadline, and it is answered 504 at once; without, its clock starts at
    the read and it is served."""
    with socket_wait_server(monkeypatch, 0.3, 0.5, socket_wait=socket_wait) as (_, conn):
        conn.request("POST", "/v2/models/resnet/infer", body=BODY,
                     headers={"content-type": "application/json"})
        r = conn.getresponse()
        assert r.status == want, r.read()
        if want == 504:
            # the error says how much of the SLO had passed: the kernel's 0.3 s
            assert b"ms have passed since the request's first byte" in r.read()


def test_a_wait_beyond_any_request_is_read_as_none():
    class Sock:
        def getsockopt(self, level, opt, size):
            return bytes(52) + struct.pack("=I", 10**6) + bytes(size - 56)

    wait = rx_wait.socket_wait_reader(Sock())
    if rx_wait._TCP_INFO is None:  # not Linux: no reader at all
        assert wait is None
    else:
        assert wait is not None and wait() == 0.0  # 1,000 s: not a wait
