"""KServe v2 REST front end (FastAPI) and Prometheus /metrics.

Routes: GET /v2/health/live, /v2/health/ready, /v2, /v2/models/{m}[/versions/{v}],
/v2/models/{m}[/versions/{v}]/ready; POST /v2/models/{m}[/versions/{v}]/infer; GET /metrics.
Errors are KServe's `{"error": "..."}` with the status from `service.http_status`.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from superserve.errors import SuperServeError
from superserve.server.codec import HEADER_LENGTH, decode_http, encode_http
from superserve.server.metrics import CONTENT_TYPE, ServerMetrics
from superserve.server.service import InferenceService, http_status

log = logging.getLogger(__name__)

__all__ = ["build_app"]


def _error(exc: BaseException) -> JSONResponse:
    status = http_status(exc)
    headers = {}
    retry = getattr(exc, "retry_after_s", None)
    if status == 429 and retry is not None:
        headers["Retry-After"] = str(max(1, round(retry)))
    if status == 500:
        log.error("request failed: %s", exc)
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)


async def _read_body(request: Request, service: InferenceService) -> bytes:
    """Read at most `limit` bytes: a declared or actual larger body is refused (413) without
    buffering it whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        service.check_size(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        service.check_size(size)
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(service: InferenceService, metrics: ServerMetrics | None = None) -> FastAPI:
    app = FastAPI(title="SuperServe", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(SuperServeError)
    async def _on_error(request: Request, exc: SuperServeError) -> JSONResponse:
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

    @app.post("/v2/models/{model}/infer")
    @app.post("/v2/models/{model}/versions/{version}/infer")
    async def infer(model: str, request: Request, version: str = "") -> Response:
        service.check_model(model, version)
        body = await _read_body(request, service)
        decoded = decode_http(body, request.headers.get(HEADER_LENGTH), service.io)
        result = await service.infer(decoded.images, decoded.slo_s)
        content, headers = encode_http(decoded, result, service.model)
        return Response(content=content, headers=headers)

    @app.get("/metrics")
    async def prometheus() -> Response:
        body = metrics.render() if metrics is not None else b""
        return Response(content=body, media_type=CONTENT_TYPE)

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE"])
    async def not_found(path: str) -> JSONResponse:
        return JSONResponse({"error": f"no such endpoint: /{path}"}, status_code=404)

    return app
