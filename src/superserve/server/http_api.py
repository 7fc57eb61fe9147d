"""KServe v2 REST front end (FastAPI) and Prometheus /metrics.

Routes: GET /v2/health/live, /v2/health/ready, /v2, /v2/models/{m}[/versions/{v}],
/v2/models/{m}[/versions/{v}]/ready; POST /v2/models/{m}[/versions/{v}]/infer; GET /metrics.
Errors are KServe's `{"error": "..."}` with the status from `service.http_status`.

Infer, the one hot route, is answered by a plain ASGI handler in front of the FastAPI app
(`InferFastPath`); everything else goes through FastAPI. Measured on the 2-core machine with
uvicorn + httptools, 1,000 req/s: FastAPI's routing, middleware stack and request object
cost ~130 us of CPU per request over a bare ASGI handler (191 vs 61 us), and the router, the
front end and the load generator share one core there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from superserve.errors import InvalidInputError, SuperServeError
from superserve.server.codec import (
    HEADER_LENGTH,
    Decoded,
    decode_content,
    decode_http,
    encode_http,
    request_images,
    undecoded_images,
)
from superserve.server.limits import ON_DISCONNECT_KEY
from superserve.server.metrics import CONTENT_TYPE, ServerMetrics
from superserve.server.offload import OFFLOAD_MIN_BYTES, run_blocking, run_cpu, should_offload
from superserve.server.openapi import allowed_methods, openapi_document

# ASGI scope key: when the read holding the request's first byte was handled (loop time),
# set by server.app's uvicorn protocol
FIRST_BYTE_KEY = "superserve.first_byte_s"
from superserve.runtime.router import InferenceResult, OnDone
from superserve.server.service import InferenceService, http_status

log = logging.getLogger(__name__)

__all__ = ["build_app"]


def _error_parts(exc: BaseException) -> tuple[int, bytes, dict[str, str]]:
    """status, KServe error body, headers (Retry-After on 429) for an error."""
    status = http_status(exc)
    headers = {"content-type": "application/json"}
    retry = getattr(exc, "retry_after_s", None)
    if status in (429, 503) and retry is not None:
        headers["retry-after"] = str(max(1, round(retry)))
    if status == 500:
        log.error("request failed: %s", exc)
    return status, json.dumps({"error": str(exc)}).encode(), headers


def _error(exc: BaseException) -> Response:
    status, body, headers = _error_parts(exc)
    return Response(content=body, status_code=status, headers=headers)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
_HEADER_LENGTH_KEY = HEADER_LENGTH.lower().encode()


class InferFastPath:
    """ASGI: POST /v2/models/{m}[/versions/{v}]/infer answered here, all else by `app`."""

    def __init__(self, app: Any, service: InferenceService, auth: Any = None) -> None:
        self.app = app
        self.service = service
        self.auth = auth  # server.auth.Authenticator, or None: no authentication
        self.direct = self  # the server's protocol answers infer requests itself with it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.auth is not None:
                try:
                    self.auth.check_http(scope["path"], scope["headers"])
                except SuperServeError as e:
                    await _send_error(send, e, [(b"www-authenticate", b"Bearer")])
                    return
            if scope["method"] == "POST":
                m = _INFER_PATH.match(scope["path"])
                if m is not None:
                    await self._infer(m.group(1), m.group(2) or "", scope, receive, send)
                    return
            allowed = allowed_methods(scope["path"])
            if allowed is None and scope["method"] not in ("GET", "POST", "PUT", "DELETE"):
                # FastAPI would answer these 405 {"detail"}: an unknown path is a 404, in
                # KServe's error format, whatever the method
                await _send(send, 404, json.dumps({"error": f"no such endpoint: "
                                                            f"{scope['path'][:200]}"}).encode(),
                            [(b"content-type", b"application/json")])
                return
            if allowed is not None and scope["method"] not in allowed:
                await _send(send, 405, json.dumps({"error": (
                    f"method {scope['method']} is not allowed on {scope['path']}; "
                    f"use {', '.join(allowed)}")}).encode(),
                    [(b"content-type", b"application/json"),
                     (b"allow", ", ".join(allowed).encode())])
                return
        await self.app(scope, receive, send)

    async def answer(self, model: str, version: str, headers: dict[bytes, bytes],
                     read_body: Callable[[bytes | None], Awaitable[bytes]],
                     arrival_s: float | None, decoded: Decoded | None = None
                     ) -> tuple[int, bytes, list[tuple[bytes, bytes]], InferenceResult | None]:
        """One infer request, transport aside: (status, body, headers, result). `read_body`
        gets the declared Content-Length and returns the whole body (refusing an oversized
        one with 413 as it arrives); `decoded`: the request already checked and decoded
        (`decode_small`), the body is not read again. Never raises but for cancellation; a
        cancelled request whose result was ready counts as a miss (its answer never went
        out)."""
        service = self.service
        result = None
        try:
            if decoded is None:
                service.check_model(model, version)
                body = await read_body(headers.get(b"content-length"))
                ce = headers.get(b"content-encoding")
                if ce is not None:
                    limit = service.max_body_bytes
                    body = (await run_blocking(decode_content, body, ce.decode("latin-1"),
                                               limit)
                            if should_offload(len(body)) else
                            decode_content(body, ce.decode("latin-1"), limit))
                hl = headers.get(_HEADER_LENGTH_KEY)
                decoded = await _decode(body, hl.decode("latin-1") if hl is not None else None,
                                        service)
            images = await request_images(decoded, service.io)  # JPEG/PNG: off the loop
            result = await service.infer(images, decoded.slo_s, arrival_s)
            # JSON text of float32 logits is ~3x their bytes
            if should_offload(3 * result.logits.nbytes):
                content, out_headers = await run_blocking(encode_http, decoded, result,
                                                          service.model, service.io)
                return 200, content, _header_list(out_headers), result
            return self.encoded(decoded, result)
        except asyncio.CancelledError:
            if result is not None:
                service.written(result, delivered=False)  # a completed one: a miss, not lost
            raise
        except Exception as e:  # noqa: BLE001  (error_response tells bad input from a bug)
            return (*self.error_response(e), result)

    async def answer_until_gone(self, scope: Scope, model: str, version: str,
                                read_body: Callable[[bytes | None], Awaitable[bytes]],
                                decoded: Decoded | None = None
                                ) -> tuple[int, bytes, list[tuple[bytes, bytes]],
                                           InferenceResult | None] | None:
        """`answer`, cancelled if the client disconnects first (limits.py calls the hook it
        leaves in the scope from connection_lost): the router ends the request as CANCELLED,
        and what has not started for it (decoding, a place in a batch) never does. None:
        the client is gone, nobody to answer. The hook is gone when this returns."""
        task, gone = asyncio.current_task(), []

        def disconnected() -> None:
            gone.append(True)
            if task is not None:
                task.cancel()

        scope[ON_DISCONNECT_KEY] = disconnected
        try:
            return await self.answer(model, version, dict(scope["headers"]), read_body,
                                     scope.get(FIRST_BYTE_KEY), decoded)
        except asyncio.CancelledError:
            if not gone:
                raise
            return None
        finally:
            scope.pop(ON_DISCONNECT_KEY, None)  # from here on a disconnect fails the write

    def decode_small(self, model: str, version: str, headers: dict[bytes, bytes],
                     body: bytes) -> Decoded:
        """The synchronous part of `answer` for a small request without Content-Encoding:
        the checked, decoded request (encoded images still to decode, off the loop, by
        `answer`). Raises SuperServeError."""
        service = self.service
        service.check_model(model, version)
        service.check_size(len(body))
        hl = headers.get(_HEADER_LENGTH_KEY)
        decoded = decode_http(body, hl.decode("latin-1") if hl is not None else None,
                              service.io)
        return decoded

    def refuse_if_late(self, model: str, version: str, headers: dict[bytes, bytes],
                       body: bytes, arrival_s: float | None, on_done: OnDone
                       ) -> asyncio.Future[InferenceResult] | None:
        """A small request whose SLO was spent before its last byte was read, refused (504,
        through `on_done`) before its body is decoded: InferenceService.refuse_if_late. None:
        decode it (`decode_small`). Raises SuperServeError (a late request for a wrong model:
        404, as it would be decoded)."""
        service = self.service

        def images() -> int | None:  # read only for a late request
            service.check_model(model, version)
            return undecoded_images(body, headers.get(_HEADER_LENGTH_KEY))

        return service.refuse_if_late(arrival_s, images, on_done)

    def encoded(self, decoded: Decoded, result: InferenceResult
                ) -> tuple[int, bytes, list[tuple[bytes, bytes]], InferenceResult]:
        """The 200 response of a completed request, encoded on the loop."""
        content, out_headers = encode_http(decoded, result, self.service.model,
                                           self.service.io)
        return 200, content, _header_list(out_headers), result

    @staticmethod
    def error_response(e: BaseException) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """A KServe error for bad input or a refusal; for anything else (a bug), a logged 500
        that names only the exception's type."""
        if isinstance(e, SuperServeError):
            status, content, err_headers = _error_parts(e)
            return status, content, _header_list(err_headers)
        log.error("infer failed unexpectedly", exc_info=e)
        return 500, json.dumps({"error": f"internal error: {type(e).__name__}"}).encode(), \
            [(b"content-type", b"application/json")]

    async def _infer(self, model: str, version: str, scope: Scope, receive: Receive,
                     send: Send) -> None:
        """The ASGI route (the server's own protocol answers most infer requests without
        ASGI: server/direct_http.py)."""
        service = self.service
        answered = await self.answer_until_gone(
            scope, model, version, lambda declared: _receive_body(receive, declared, service))
        if answered is None:
            return  # nobody to answer
        status, content, extra, result = answered
        scope.pop(ON_DISCONNECT_KEY, None)  # from here on a disconnect only fails the write
        extra.append((b"content-length", str(len(content)).encode()))
        sent = False
        try:
            await send({"type": "http.response.start", "status": status, "headers": extra})
            await send({"type": "http.response.body", "body": content})
            sent = True
        finally:  # the request's clock stops at its last byte (a miss if it never went out)
            service.written(result, delivered=sent and status == 200)


_JSON_ONLY = {"content-type": "application/json"}


def _header_list(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    if headers == _JSON_ONLY:  # the usual response's (a new list: callers append to it)
        return [(b"content-type", b"application/json")]
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


async def _decode(body: bytes, header_length: str | None, service: InferenceService) -> Any:
    """`decode_http`, off the loop for a large body: a large JSON text in a decode process
    (the parser holds the GIL throughout), a large binary-extension body on a thread (numpy
    copies release it)."""
    if not should_offload(len(body)):
        return decode_http(body, header_length, service.io)
    h = (header_length or "").strip()
    json_bytes = len(body) if header_length is None else int(h) if h.isdigit() else 0
    if json_bytes >= OFFLOAD_MIN_BYTES:
        return await run_cpu(decode_http, body, header_length, service.io)
    return await run_blocking(decode_http, body, header_length, service.io)


async def _send(send: Send, status: int, body: bytes,
                headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, exc: BaseException,
                      headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    status, body, err_headers = _error_parts(exc)
    await _send(send, status, body,
                [*((k.encode(), v.encode()) for k, v in err_headers.items()), *headers])


async def _receive_body(receive: Receive, declared: bytes | None,
                        service: InferenceService) -> bytes:
    """The request body, refused (413) as soon as its declared or received size passes the
    limit, without buffering it whole."""
    if declared is not None and declared.isdigit():
        service.check_size(int(declared))
    chunks, size, more = [], 0, True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise InvalidInputError("client disconnected before sending the whole body")
        chunk = msg.get("body", b"")
        size += len(chunk)
        service.check_size(size)
        chunks.append(chunk)
        more = msg.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def build_app(service: InferenceService, metrics: ServerMetrics | None = None,
              auth: Any = None) -> InferFastPath:
    app = FastAPI(title="SuperServe", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(SuperServeError)
    async def _on_error(request: Request, exc: SuperServeError) -> Response:
        return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": f"malformed request: {exc}"}, status_code=400)

    @app.get("/v2/health/live")
    async def live() -> JSONResponse:
        return JSONResponse({"live": True})

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        ok = service.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2")
    async def server_metadata() -> JSONResponse:
        return JSONResponse(service.server_metadata())

    @app.get("/v2/models/{model}")
    @app.get("/v2/models/{model}/versions/{version}")
    async def model_metadata(model: str, version: str = "") -> JSONResponse:
        service.check_model(model, version)
        return JSONResponse(service.model_metadata())

    @app.get("/v2/models/{model}/ready")
    @app.get("/v2/models/{model}/versions/{version}/ready")
    async def model_ready(model: str, version: str = "") -> JSONResponse:
        service.check_model(model, version)
        ok = service.ready()
        return JSONResponse({"name": model, "ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(openapi_document(service.model, service.io.image_shape,
                                             service.io.max_images,
                                             service.io.input_spec is not None))

    @app.get("/metrics")
    async def prometheus() -> Response:
        body = await metrics.render_async() if metrics is not None else b""
        return Response(content=body, media_type=CONTENT_TYPE)

    from superserve.server.admin import register_admin

    register_admin(app, service, metrics)  # /v2/admin/workers (before the catch-all)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def not_found(path: str) -> JSONResponse:
        return JSONResponse({"error": f"no such endpoint: /{path}"}, status_code=404)

    return InferFastPath(app, service, auth)
