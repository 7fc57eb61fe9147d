"""POST /v2/models/{m}[/versions/{v}]/infer answered by the HTTP protocol itself, without ASGI.

uvicorn's httptools protocol hands every request to the application as an ASGI cycle: a scope
dict, an `asyncio.Event`, message dicts for the body and for each part of the response, a
header loop that validates every header it writes, and two writes per response (headers, then
body). For the one hot route that costs more than its work (measured on the 2-core machine at
2,000 req/s with a no-compute worker: a bare uvicorn ASGI app spends ~77 us of CPU per request,
a bare httptools protocol ~45).

`DirectInfer` takes the place of uvicorn's `RequestResponseCycle` for an infer request: it has
the attributes uvicorn's protocol touches (`scope`, `body`, `more_body`, `message_event`,
`response_complete`, `disconnected`, `keep_alive`, `run_asgi`), so uvicorn's own connection
handling (body buffering and flow control, pipelining, keep-alive timers, `limit_concurrency`,
graceful shutdown, the slow-client guard and the disconnect hook of server/limits.py) works
unchanged. The request itself runs through `InferFastPath.answer`, the same code as the ASGI
route, and the response goes out in one write. `direct_protocol` builds the protocol class;
anything but a plain POST to the infer path (`Expect: 100-continue`, an escaped path, a
WebSocket upgrade, over the concurrency limit) takes uvicorn's ASGI route as before.

The fast lane: a request whose declared body is small (<= 64 KiB, under uvicorn's read
high-water mark and the off-loop decode size) and has no Content-Encoding waits whole in the
parser's buffer, is decoded and admitted in the parser's `on_message_complete` callback, and
is answered from the router future's done-callback: no task, no awaits. Everything else
(large bodies, gzip, encoded images, a pipelined request behind another) runs as a task
(`run_asgi`) through the same `InferFastPath` code.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from superserve.errors import InvalidInputError, SuperServeError
from superserve.server.http_api import FIRST_BYTE_KEY, _error_parts
from superserve.server.limits import ON_DISCONNECT_KEY, uvicorn_method_has

log = logging.getLogger(__name__)

__all__ = ["DirectInfer", "direct_protocol"]

_INFER_PATH = re.compile(rb"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


class _BodyEvent:
    """What uvicorn's protocol sets when more of the body (or its end) arrived: an
    `asyncio.Event` made lazily, only for a request that waits for its body (most never do;
    creating one per request costs more than the rest of the cycle's set-up)."""

    __slots__ = ("_event", "_set")

    def __init__(self) -> None:
        self._set = False
        self._event: asyncio.Event | None = None

    def set(self) -> None:
        self._set = True
        if self._event is not None:
            self._event.set()

    def clear(self) -> None:
        self._set = False
        if self._event is not None:
            self._event.clear()

    def is_set(self) -> bool:
        return self._set

    async def wait(self) -> None:
        if self._set:
            return
        if self._event is None:
            self._event = asyncio.Event()
        await self._event.wait()


class DirectInfer:
    """One infer request on a connection, in place of uvicorn's RequestResponseCycle."""

    __slots__ = (
        "body",
        "decoded",
        "default_headers",
        "deferred",
        "disconnected",
        "flow",
        "future",
        "handler",
        "keep_alive",
        "message_event",
        "model",
        "more_body",
        "on_response",
        "response_complete",
        "response_started",
        "scope",
        "transport",
        "version",
    )

    def __init__(self, protocol: Any, handler: Any, model: str, version: str,
                 keep_alive: bool) -> None:
        self.scope = protocol.scope
        self.transport = protocol.transport
        self.flow = protocol.flow
        self.handler = handler  # http_api.InferFastPath
        self.model, self.version = model, version
        self.default_headers = protocol.server_state.default_headers
        self.on_response = protocol.on_response_complete
        self.body = bytearray()
        self.more_body = True
        self.message_event = _BodyEvent()
        self.response_started = self.response_complete = self.disconnected = False
        self.keep_alive = keep_alive
        self.deferred = False  # small body: answered when it is complete (`answer_now`)
        self.decoded: Any = None
        self.future: Any = None

    async def run_asgi(self, app: Any) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException:  # noqa: BLE001  (a bug: as uvicorn, 500 if nothing went out)
            self._failed()

    async def _run(self) -> None:
        handler = self.handler
        scope = self.scope
        if self.decoded is None and not self._authorized():  # (answer_now checked it)
            return
        answered = await handler.answer_until_gone(scope, self.model, self.version,
                                                   self._read_body, self.decoded)
        if answered is None:
            return  # the client left: nobody to answer
        status, content, extra, result = answered
        sent = False
        try:
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()  # a client that reads slowly
            sent = self._write(status, extra, content)
        finally:  # the request's clock stops at its last byte (a miss if it never went out)
            handler.service.written(result, delivered=sent and status == 200)

    def _authorized(self) -> bool:
        """The bearer token check (when the server has one); a 401 answered when it fails."""
        auth = self.handler.auth
        if auth is None:
            return True
        try:
            auth.check_http(self.scope["path"], self.scope["headers"])
            return True
        except SuperServeError as e:
            status, body, err = _error_parts(e)
            self._write(status, [*((k.encode(), v.encode()) for k, v in err.items()),
                                 (b"www-authenticate", b"Bearer")], body)
            return False

    # ---------------------------------------------------------------- the fast lane
    def answer_now(self) -> bool:
        """A small, complete request without Content-Encoding: checked, decoded and admitted
        right here, in the parser's callback, and answered from the router (`on_done`) as
        soon as its batch ends: no task, no awaits. False: it needs the general path
        (`run_asgi`)."""
        handler = self.handler
        service = handler.service
        scope = self.scope
        try:
            if not self._authorized():
                return True
            try:
                headers, body = dict(scope["headers"]), bytes(self.body)
                late = handler.refuse_if_late(self.model, self.version, headers, body,
                                              scope.get(FIRST_BYTE_KEY), self._resolved)
                if late is not None:  # a 504 from `_resolved`, its body never decoded
                    self.future = late
                    return True
                decoded = handler.decode_small(self.model, self.version, headers, body)
                if decoded.encoded is not None:
                    self.decoded = decoded  # encoded images: decoded off the loop, in run_asgi
                    return False
                # answered from the router as soon as its batch ends (`_resolved`)
                future = service.submit(decoded.images, decoded.slo_s,
                                        scope.get(FIRST_BYTE_KEY), self._resolved)
            except Exception as e:  # noqa: BLE001  (bad input: a 4xx; a bug: a logged 500)
                status, content, extra = handler.error_response(e)
                self._write(status, extra, content)
                return True
            self.decoded, self.future = decoded, future
            scope[ON_DISCONNECT_KEY] = self._client_left
            return True
        except BaseException:  # noqa: BLE001  (a bug: answered 500 or closed, logged)
            self._failed()
            return True

    def _client_left(self) -> None:
        self.handler.service.router.cancel(
            self.future, "the client went away (disconnected before its answer)")

    def _resolved(self, future: Any) -> None:
        service = self.handler.service
        self.scope.pop(ON_DISCONNECT_KEY, None)
        try:
            result = future.result()
            done = result if result.error is None else None  # what `written` reports on
            if self.disconnected:
                if done is not None:
                    service.written(done, delivered=False)  # completed, never delivered
                return
            try:
                result.raise_for_outcome()
                status, content, extra, _ = self.handler.encoded(self.decoded, result)
            except Exception as e:  # noqa: BLE001
                status, content, extra = self.handler.error_response(e)
            if self.flow.write_paused:  # a client that reads slowly: wait for it off here
                task = asyncio.get_running_loop().create_task(
                    self._write_later(status, extra, content, done))
                _LATER.add(task)  # the loop holds tasks weakly
                task.add_done_callback(_LATER.discard)
                return
            sent = False
            try:
                sent = self._write(status, extra, content)
            finally:
                service.written(done, delivered=sent and status == 200)
        except BaseException:  # noqa: BLE001  (a bug: answered 500 or closed, logged)
            self._failed()

    async def _write_later(self, status: int, extra: list[tuple[bytes, bytes]],
                           content: bytes, done: Any) -> None:
        sent = False
        try:
            await self.flow.drain()
            sent = self._write(status, extra, content)
        finally:
            self.handler.service.written(done, delivered=sent and status == 200)

    def _failed(self) -> None:
        log.exception("infer request failed outside the handler")
        if not self.response_started:
            self._write(500, [(b"content-type", b"application/json")],
                        b'{"error": "internal error"}')
        elif not self.transport.is_closing():
            self.transport.close()

    async def _read_body(self, declared: bytes | None) -> bytes:
        """The whole body, refused (413) as soon as its declared or received size passes the
        limit. uvicorn's protocol pauses reading past its high-water mark; resumed here as
        uvicorn's own `receive` does."""
        service = self.handler.service
        if declared is not None and declared.isdigit():
            service.check_size(int(declared))
        service.check_size(len(self.body))
        while self.more_body and not self.disconnected:
            self.flow.resume_reading()
            await self.message_event.wait()
            self.message_event.clear()
            service.check_size(len(self.body))
        if self.disconnected:
            raise InvalidInputError("client disconnected before sending the whole body")
        return bytes(self.body)

    def _write(self, status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> bool:
        """The whole response in one write; False when the client is gone."""
        if self.disconnected or self.transport.is_closing():
            return False
        parts = [STATUS_LINE[status], _header_block(self.default_headers)]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"content-length: ", str(len(content)).encode(), b"\r\n\r\n", content)
        self.transport.write(b"".join(parts))
        self.response_started = self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        on_response, self.on_response = self.on_response, _nothing
        on_response()
        return True


_LATER: set[asyncio.Task[None]] = set()  # fast-lane answers waiting for a slow reader
_block: tuple[Any, bytes] = (None, b"")  # uvicorn's default headers, as last written


def _header_block(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """uvicorn's default headers (`date`, `server`) as written, made once per list (uvicorn
    replaces the list each second; one tuple, so a server on another thread's loop never
    reads one list's block for another's)."""
    global _block
    cached = _block
    if cached[0] is not default_headers:
        cached = _block = (default_headers,
                           b"".join(b"%s: %s\r\n" % hv for hv in default_headers))
    return cached[1]


def _nothing() -> None:
    return None


def uvicorn_supports_direct(protocol: type) -> bool:
    """Whether uvicorn's httptools protocol still has what `direct_protocol` relies on (its
    internals, not its API): the per-request cycle and task set-up, the pipeline queue."""
    return uvicorn_method_has(
        protocol, "__init__",
        ("_start_asgi_task", "on_headers_complete", "on_message_complete",
         "on_response_complete", "on_body"),
        tuple(f"self.{a}" for a in ("pipeline", "cycle", "flow", "server_state",
                                    "limit_concurrency")))


def direct_protocol(base: type, handler: Any) -> type:
    """A subclass of uvicorn's httptools protocol `base` that answers infer requests with
    `DirectInfer` (handler: http_api.InferFastPath)."""

    class DirectInferProtocol(base):  # type: ignore[misc,valid-type]
        def on_headers_complete(self) -> None:
            parser = self.parser
            if self.expect_100_continue or parser.get_method() != b"POST" or \
                    parser.should_upgrade():
                return super().on_headers_complete()
            url = httptools.parse_url(self.url)
            raw_path = url.path
            m = _INFER_PATH.match(raw_path)
            limit = self.limit_concurrency
            if m is None or b"%" in raw_path or (limit is not None and (
                    len(self.connections) >= limit or len(self.tasks) >= limit)):
                return super().on_headers_complete()
            http_version = parser.get_http_version()
            scope = self.scope
            scope["method"] = "POST"
            if http_version != "1.1":
                scope["http_version"] = http_version
            scope["path"] = raw_path.decode("ascii")
            scope["raw_path"] = raw_path
            scope["query_string"] = url.query or b""
            version = m.group(2)
            cycle = DirectInfer(self, handler, m.group(1).decode("ascii"),
                                version.decode("ascii") if version else "",
                                http_version != "1.0" and parser.should_keep_alive())
            existing, self.cycle = self.cycle, cycle
            if existing is None or existing.response_complete:
                if _small(self.headers):
                    cycle.deferred = True  # answered in on_message_complete
                else:
                    self._start_asgi_task(cycle, None)
            else:  # pipelined behind an answer still being written: uvicorn's queue
                self.flow.pause_reading()
                self.pipeline.appendleft((cycle, None))
            return None

        def on_message_complete(self) -> None:
            super().on_message_complete()
            cycle = self.cycle
            if type(cycle) is DirectInfer and cycle.deferred:
                cycle.deferred = False
                if not cycle.answer_now():
                    self._start_asgi_task(cycle, None)

    return DirectInferProtocol


FAST_LANE_MAX_BYTES = 64 * 1024  # below uvicorn's read high-water mark and the offload size


def _small(headers: list[tuple[bytes, bytes]]) -> bool:
    """A declared body small enough to decode on the loop, without Content-Encoding: the
    request can wait whole in the parser's buffer and take the fast lane."""
    length = None
    for name, value in headers:
        if name == b"content-length":
            length = value
        elif name in (b"content-encoding", b"transfer-encoding"):
            return False
    return length is not None and length.isdigit() and int(length) <= FAST_LANE_MAX_BYTES
