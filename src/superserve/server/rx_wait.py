"""How long a request's bytes sat in the kernel's socket buffer before the loop read them.

A request's clock starts when its first byte reaches the server (docs/calibration.md). The
HTTP front end stamps the read that holds it, but a loop that was busy (a burst of requests,
a batch's responses, a co-tenant on the core) reads late, and the bytes' wait in the kernel
is invisible to the read: the server then plans with slack the client no longer has, and its
SLO metric counts a request as met that the client saw late. Linux keeps, per TCP socket,
when the last data segment arrived (`tcpi_last_data_recv` of `TCP_INFO`: milliseconds ago, in
scheduler ticks, e.g. 4 ms at HZ=250). Read right after the data is, it is the age of the bytes
just read: the stamp moves back by it (unbiased, to within one tick either way; a request whose
first bytes came in an earlier segment than its last is aged by the later one, so never too
old). One getsockopt per read (~1 us); nothing where the kernel does not say (not Linux, not
TCP): the read's own time, as before. A value beyond `MAX_WAIT_S` is not a wait (a socket in a
state the kernel does not keep it for) and reads as none.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["socket_wait_reader"]

_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux only
# struct tcp_info (linux/tcp.h, append-only): 8 one-byte fields, then u32 rto, ato, snd_mss,
# rcv_mss, unacked, sacked, lost, retrans, fackets, last_data_sent; then last_data_recv
_LAST_DATA_RECV = 8 + 4 * 11
_NEED = _LAST_DATA_RECV + 4
_U32 = struct.Struct("=I")
MAX_WAIT_S = 60.0  # longer than any request may take to arrive (--request-read-timeout-s)


def socket_wait_reader(sock: Any) -> Callable[[], float] | None:
    """A function giving how long ago (s) the last data segment reached `sock` (a TCP socket,
    or the transport's wrapper of one), or None where the kernel does not say."""
    get = getattr(sock, "getsockopt", None)
    if _TCP_INFO is None or get is None:
        return None
    try:
        if len(get(socket.IPPROTO_TCP, _TCP_INFO, _NEED)) < _NEED:
            return None
    except (OSError, TypeError, ValueError):  # not TCP (a unix socket), or closed
        return None
    unpack = _U32.unpack_from
    proto, opt = socket.IPPROTO_TCP, _TCP_INFO

    def wait_s() -> float:
        try:
            w = unpack(get(proto, opt, _NEED), _LAST_DATA_RECV)[0] / 1e3
        except (OSError, struct.error):  # closed meanwhile
            return 0.0
        return w if w <= MAX_WAIT_S else 0.0

    return wait_s
