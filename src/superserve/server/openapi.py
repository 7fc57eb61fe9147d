"""The REST API as an OpenAPI 3.0 document, and the route table derived from it.

One source for three uses: `GET /v2/openapi.json` serves the document (clients, and the
schema-driven fuzz in tests/test_fuzz_rest.py), `allowed_methods` answers 405 with `Allow`
for a known path called with the wrong method, and the document names the infer fast path
(`InferFastPath` in http_api.py) like any other route, so the fuzz reaches it. The admin
routes of server/admin.py (workers added and removed while serving) are in it too.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["PATHS", "allowed_methods", "openapi_document"]

# path template -> methods. Every route of the FastAPI app in http_api.py must be listed here
# (a listed path called with another method is answered 405 before FastAPI sees it).
PATHS: dict[str, tuple[str, ...]] = {
    "/v2/health/live": ("GET",),
    "/v2/health/ready": ("GET",),
    "/v2": ("GET",),
    "/v2/models/{model_name}": ("GET",),
    "/v2/models/{model_name}/versions/{model_version}": ("GET",),
    "/v2/models/{model_name}/ready": ("GET",),
    "/v2/models/{model_name}/versions/{model_version}/ready": ("GET",),
    "/v2/models/{model_name}/infer": ("POST",),
    "/v2/models/{model_name}/versions/{model_version}/infer": ("POST",),
    "/v2/openapi.json": ("GET",),
    "/metrics": ("GET",),
    "/v2/admin/workers": ("GET", "POST"),
    "/v2/admin/workers/{worker_id}": ("DELETE",),
}

_ROUTES = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), m)
           for p, m in PATHS.items()]


def allowed_methods(path: str) -> tuple[str, ...] | None:
    """The methods a known path takes, or None for an unknown path."""
    for rx, methods in _ROUTES:
        if rx.match(path):
            return methods
    return None


_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string"}}}
_PARAMS = {"type": "object", "additionalProperties": {
    "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}}


def _error(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": _ERROR}}}


def _json(desc: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def openapi_document(model: str = "resnet", image_shape: tuple[int, ...] = (1, 28, 28),
                     max_images: int = 256, image_input: bool = False) -> dict[str, Any]:
    """The KServe v2 REST API of this server (what it really accepts and answers).
    `image_input`: the model also takes the BYTES input `image` (encoded JPEG/PNG, base64 in
    JSON) and the classification extension on `logits`."""
    n_values = 1
    for d in image_shape:
        n_values *= d
    tensor_in = {
        "type": "object", "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "example": "input"},
            "shape": {"type": "array", "items": {"type": "integer"},
                      "example": [1, *image_shape]},
            "datatype": {"type": "string", "example": "FP32"},
            "parameters": {"type": "object", "properties": {
                "binary_data_size": {"type": "integer", "minimum": 0}}},
            "data": {"type": "array", "items": {"type": "number"},
                     "maxItems": max_images * n_values},
        }}
    if image_input:  # FP32 `input` as above, or BYTES `image`: base64 strings in JSON
        tensor_in["properties"]["name"]["enum"] = ["input", "image"]
        tensor_in["properties"]["datatype"]["enum"] = ["FP32", "BYTES"]
        tensor_in["properties"]["parameters"]["properties"]["content_type"] = {
            "type": "string", "enum": ["base64"]}
        tensor_in["properties"]["data"]["items"] = {
            "oneOf": [{"type": "number"}, {"type": "string", "format": "byte"}]}
    out_req = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "enum": ["logits", "predicted"]},
        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}
    if image_input:
        out_req["parameters"]["properties"]["classification"] = {"type": "integer",
                                                                 "minimum": 0}
    infer_req = {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {
                "slo_ms": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                "timeout": {"type": "integer", "minimum": 1},
                "binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "items": tensor_in, "minItems": 1, "maxItems": 1},
            "outputs": {"type": "array", "items": out_req, "maxItems": 2},
        }}
    tensor_out = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array", "items": {"oneOf": [{"type": "number"}, {"type": "string"}]}},
        "parameters": _PARAMS}}
    infer_resp = {"type": "object", "required": ["model_name", "outputs"], "properties": {
        "model_name": {"type": "string"}, "model_version": {"type": "string"},
        "id": {"type": "string"}, "parameters": _PARAMS,
        "outputs": {"type": "array", "items": tensor_out}}}
    model_p = {"name": "model_name", "in": "path", "required": True,
               "schema": {"type": "string", "example": model}}
    version_p = {"name": "model_version", "in": "path", "required": True,
                 "schema": {"type": "string", "example": "1"}}
    infer_op = {
        "summary": "Run inference (the fast path: http_api.InferFastPath)",
        "parameters": [{"name": "Inference-Header-Content-Length", "in": "header",
                        "required": False, "schema": {"type": "integer", "minimum": 0}},
                       {"name": "Content-Encoding", "in": "header", "required": False,
                        "schema": {"type": "string", "enum": ["identity", "gzip", "deflate"]}}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": infer_req},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {
            "200": {"description": "inference result (JSON, or JSON + binary outputs)",
                    "content": {"application/json": {"schema": infer_resp},
                                "application/octet-stream": {
                                    "schema": {"type": "string", "format": "binary"}}}},
            "400": _error("malformed request"), "401": _error("missing or wrong token"),
            "404": _error("unknown model or version"), "405": _error("wrong method"),
            "413": _error("payload too large"), "415": _error("unsupported Content-Encoding"),
            "429": _error("queue full (Retry-After)"),
            "503": _error("draining, or no worker ready"),
            "504": _error("deadline cannot be or was not met")}}
    ready = {"type": "object", "properties": {"name": {"type": "string"},
                                              "ready": {"type": "boolean"}}}
    tmeta = {"type": "object", "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}}}}
    model_md = {"type": "object", "required": ["name", "inputs", "outputs"], "properties": {
        "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"}, "inputs": {"type": "array", "items": tmeta},
        "outputs": {"type": "array", "items": tmeta}}}

    def get(desc: str, schema: dict[str, Any], params: list[Any] | None = None,
            errors: tuple[str, ...] = ()) -> dict[str, Any]:
        responses = {"200": _json(desc, schema), "401": _error("missing or wrong token"),
                     "405": _error("wrong method")}
        for code in errors:
            responses[code] = _error(code)
        op: dict[str, Any] = {"summary": desc, "responses": responses}
        if params:
            op["parameters"] = params
        return {"get": op}

    paths = {
        "/v2/health/live": get("liveness", {"type": "object", "properties": {
            "live": {"type": "boolean"}}}),
        "/v2/health/ready": get("readiness", ready, errors=("503",)),
        "/v2": get("server metadata", {"type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}}}}),
        "/v2/models/{model_name}": get("model metadata", model_md, [model_p], ("404",)),
        "/v2/models/{model_name}/versions/{model_version}": get(
            "model metadata", model_md, [model_p, version_p], ("404",)),
        "/v2/models/{model_name}/ready": get("model readiness", ready, [model_p],
                                             ("404", "503")),
        "/v2/models/{model_name}/versions/{model_version}/ready": get(
            "model readiness", ready, [model_p, version_p], ("404", "503")),
        "/v2/models/{model_name}/infer": {"post": {**infer_op, "parameters": [
            model_p, *infer_op["parameters"]]}},
        "/v2/models/{model_name}/versions/{model_version}/infer": {"post": {
            **infer_op, "parameters": [model_p, version_p, *infer_op["parameters"]]}},
        "/v2/openapi.json": get("this document", {"type": "object"}),
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": _error("missing or wrong token")}}},
    }
    paths.update(_admin_paths())
    return {"openapi": "3.0.3",
            "info": {"title": "SuperServe KServe v2 REST API", "version": "1"},
            "paths": paths}


def _admin_paths() -> dict[str, Any]:
    """server/admin.py's routes: the workers kept, more started, one drained and removed."""
    from superserve.server.admin import MAX_ADD, MAX_DRAIN_S

    worker = {"type": "object", "required": ["id", "state"], "properties": {
        "id": {"type": "integer"},
        "state": {"type": "string", "enum": ["starting", "ready", "draining"]},
        "node": {"type": "string", "nullable": True},
        "pid": {"type": "integer", "nullable": True}}}
    workers = {"type": "array", "items": worker}

    def answers(desc: str, schema: dict[str, Any], *errors: tuple[str, str]
                ) -> dict[str, Any]:
        out = {"200": _json(desc, schema), "401": _error("missing or wrong token"),
               "405": _error("wrong method"),
               "501": _error("the worker pool cannot add or remove workers")}
        out.update({code: _error(why) for code, why in errors})
        return out

    return {
        "/v2/admin/workers": {
            "get": {"summary": "the workers kept: id, state, node, pid",
                    "responses": answers("the workers", {
                        "type": "object", "required": ["workers"],
                        "properties": {"workers": workers}})},
            "post": {
                "summary": "start more workers; each joins the router once warmed up",
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "properties": {"count": {
                        "type": "integer", "minimum": 1, "maximum": MAX_ADD,
                        "default": 1}}}}}},
                "responses": answers("the ids added, and every worker kept", {
                    "type": "object", "required": ["added", "workers"],
                    "properties": {"added": {"type": "array", "items": {"type": "integer"}},
                                   "workers": workers}},
                    ("400", "a bad count, or a body that is not a JSON object"),
                    ("413", "a body over 4 KiB"))}},
        "/v2/admin/workers/{worker_id}": {"delete": {
            "summary": "drain a worker (its batch in flight completes), then remove it",
            "parameters": [
                {"name": "worker_id", "in": "path", "required": True,
                 "schema": {"type": "integer", "minimum": 0}},
                {"name": "timeout_s", "in": "query", "required": False,
                 "schema": {"type": "number", "minimum": 0, "maximum": MAX_DRAIN_S,
                            "default": 30}}],
            "responses": answers("removed (drained: whether its batch completed first)", {
                "type": "object", "required": ["removed", "drained", "workers"],
                "properties": {"removed": {"type": "integer"}, "drained": {"type": "boolean"},
                               "workers": workers}},
                ("400", "a bad worker id or timeout_s"), ("404", "no such worker"),
                ("409", "the last ready worker: none would serve"))}},
    }
