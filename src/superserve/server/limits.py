"""Slow clients: a bound on how long one HTTP request may take to arrive.

uvicorn bounds idle keep-alive connections (`timeout_keep_alive`) and open connections and
tasks (`limit_concurrency`: 503 beyond), but not a request whose headers trickle in, a body
that never finishes, or a fresh connection that sends nothing: each would hold a connection
(and, with `limit_concurrency`, a slot) forever. `guarded_protocol` wraps uvicorn's protocol
class with one deadline per connection: set when the connection opens and when a request's
first byte arrives, cleared when the request is complete. When it passes, a client that has
not had a response yet gets `408 Request Timeout` and the connection is closed; the
application, if it was waiting for the body, sees a disconnect (a 400 it cannot deliver).
The deadline is a number on the hot path; one loop timer per connection enforces it, and is
left armed when a request completes: when it fires with no request being read it goes idle,
before a later deadline it re-arms for that one (a timer created and cancelled per request
cost ~2-3% of the server's CPU at 2,000 req/s). The same timer closes a keep-alive connection
idle for uvicorn's `timeout_keep_alive`, in place of the timer uvicorn makes after every
response and cancels when the next request arrives.

Disconnects: uvicorn only marks a request's cycle disconnected when its connection is lost,
so an application waiting for something else (the router) would compute an answer nobody
reads. When a connection is lost before its response is complete, the protocol calls the
hook the application left in the request's scope (`ON_DISCONNECT_KEY`); the infer route
cancels its task with it, and the request ends as CANCELLED (server/http_api.py).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["ON_DISCONNECT_KEY", "guarded_protocol", "uvicorn_method_has"]

# ASGI scope key: a callable the application sets while it would still answer the request;
# called (on the loop) if the connection is lost before the response is complete
ON_DISCONNECT_KEY = "superserve.on_disconnect"

_408_BODY = json.dumps({"error": "request not received in time: the client sent its "
                                 "headers or body too slowly"}).encode()
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: " + str(len(_408_BODY)).encode() + b"\r\n\r\n"
        + _408_BODY)


def guarded_protocol(base: type, read_timeout_s: float) -> type:
    """A subclass of uvicorn's HTTP protocol `base`: a request (or a new connection's first
    request) must arrive whole within `read_timeout_s`."""

    lazy_keep_alive = _keeps_alive_per_request(base)

    class GuardedProtocol(base):  # type: ignore[misc,valid-type]
        _timer: Any = None  # the connection's one timer, armed for _timer_at, or None
        _timer_at = math.inf
        _read_by: float | None = None  # loop time the request being read must be whole by
        _idle_by: float | None = None  # loop time an idle keep-alive connection closes at
        timeouts = 0  # class-wide count (tests, logs)
        disconnects = 0  # requests whose client left before the answer (class-wide)

        def _arm(self) -> None:
            self._idle_by = None  # a request began: the connection is not idle
            if self._read_by is None:
                self._read_by = self.loop.time() + read_timeout_s
                self._ensure_timer(self._read_by)

        def _ensure_timer(self, at: float) -> None:
            """The timer fires no later than `at` (armed for an earlier time, it fires,
            finds nothing due and re-arms: deadlines move on every request, timers should
            not)."""
            if self._timer is not None:
                if self._timer_at <= at:
                    return
                self._timer.cancel()
            self._timer_at = at
            self._timer = self.loop.call_at(at, self._timer_fired)

        def _disarm(self) -> None:
            self._read_by = None  # the timer, if armed, goes idle when it fires

        def _timer_fired(self) -> None:
            self._timer, self._timer_at = None, math.inf
            now = self.loop.time()
            if self._read_by is not None and now >= self._read_by:
                self._read_by = None
                self._read_timed_out()
            elif self._idle_by is not None and now >= self._idle_by:
                self._idle_by = None
                self.timeout_keep_alive_handler()  # uvicorn's: closes the connection
            else:  # deadlines that moved since it was armed
                pending = [t for t in (self._read_by, self._idle_by) if t is not None]
                if pending:
                    self._ensure_timer(min(pending))

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            if not lazy_keep_alive or self.pipeline or self.transport.is_closing():
                super().on_response_complete()
                self._disarm()  # the next request arms it again with its first byte
                return
            # uvicorn's own steps for a response with nothing pipelined behind it, except
            # its keep-alive timer (a loop timer made and cancelled per request): the
            # connection's one timer closes it once idle for `timeout_keep_alive`
            self.server_state.total_requests += 1
            self._unset_keepalive_if_required()
            self.flow.resume_reading()
            self._disarm()
            self._idle_by = self.loop.time() + self.timeout_keep_alive
            self._ensure_timer(self._idle_by)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            self._idle_by = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer, self._timer_at = None, math.inf
            cycle = getattr(self, "cycle", None)
            hook = None
            if cycle is not None and not getattr(cycle, "response_complete", True):
                hook = cycle.scope.get(ON_DISCONNECT_KEY)
            super().connection_lost(exc)
            if hook is not None:
                type(self).disconnects += 1
                hook()

        def _read_timed_out(self) -> None:
            if self.transport is None or self.transport.is_closing():
                return
            type(self).timeouts += 1
            # the cycle is the request being read, or (its headers not complete yet) the
            # one before it on this connection: a 408 unless a response is half written
            cycle = getattr(self, "cycle", None)
            if cycle is None or not getattr(cycle, "response_started", False) or \
                    getattr(cycle, "response_complete", False):
                self.transport.write(_408)
            log.info("closing a connection from %s: request not received within %.3g s",
                     getattr(self, "client", None), read_timeout_s)
            self.transport.close()

    return GuardedProtocol


def _keeps_alive_per_request(base: type) -> bool:
    """Whether uvicorn's protocol `base` arms its keep-alive timer per response the way
    `GuardedProtocol.on_response_complete` replaces; otherwise uvicorn's own method runs
    unchanged."""
    return uvicorn_method_has(
        base, "on_response_complete",
        ("_unset_keepalive_if_required", "timeout_keep_alive_handler"),
        ("self.pipeline", "timeout_keep_alive_task = self.loop.call_later",
         "total_requests += 1", "resume_reading"))


def uvicorn_method_has(cls: type, method: str, callables: tuple[str, ...],
                       snippets: tuple[str, ...]) -> bool:
    """Whether uvicorn's class `cls` has the methods `callables` and `method`, and that
    method's source holds every one of `snippets`: what a subclass here relies on (uvicorn's
    internals, not its API) is still there."""
    import inspect

    if not all(callable(getattr(cls, n, None)) for n in (*callables, method)):
        return False
    try:
        src = inspect.getsource(getattr(cls, method))
    except (OSError, TypeError):
        return False
    return all(k in src for k in snippets)
