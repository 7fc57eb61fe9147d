"""The protocol-independent face of the server: model lookup, metadata, infer, and the one
mapping from errors to HTTP statuses and gRPC codes."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from superserve import __version__
from superserve.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ModelNotFoundError,
    NoWorkerReadyError,
    OverloadedError,
    PayloadTooLargeError,
    RequestCancelledError,
    ShuttingDownError,
    UnauthenticatedError,
    UnsupportedEncodingError,
    WorkerFailedError,
)
from superserve.profiling.table import ProfileTable
from superserve.runtime.router import InferenceResult, OnDone, Router
from superserve.server.codec import IMAGE_INPUT, OUTPUTS, ModelIO
from superserve.server.images import FORMATS

__all__ = ["EXTENSIONS", "SERVER_NAME", "InferenceService", "grpc_code_name", "http_status"]

SERVER_NAME = "superserve"
EXTENSIONS = ["binary_tensor_data", "parameters", "metrics"]


class InferenceService:
    def __init__(self, model: str, router: Router, table: ProfileTable, io: ModelIO,
                 default_slo_s: float, max_body_bytes: int, late_at_door: bool = True) -> None:
        self.model = model
        self.router = router
        self.table = table
        self.io = io
        self.default_slo_s = default_slo_s
        self.max_body_bytes = max_body_bytes
        self.late_at_door = late_at_door  # refuse_if_late: on (ServerConfig.late_at_door)

    # ------------------------------------------------------------------ health / metadata
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.router.ready_workers > 0 and not self.router.draining

    def check_model(self, name: str, version: str = "") -> None:
        if name != self.model:
            raise ModelNotFoundError(f"unknown model {name!r}; this server serves {self.model!r}")
        if version not in ("", "1"):
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; it has '1'")

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self) -> dict[str, Any]:
        t = self.table
        return {
            "name": self.model, "versions": ["1"], "platform": "superserve_supernet",
            "inputs": self._inputs(),
            "outputs": [{"name": "logits", "datatype": "FP32",
                         "shape": [-1, self.io.num_classes or -1]},
                        {"name": "predicted", "datatype": "INT64", "shape": [-1]}],
            # Not part of the KServe schema; clients ignore unknown keys.
            "parameters": {"family": t.family, "subnets": len(t),
                           "accuracy_range": [min(t.acc), max(t.acc)],
                           "default_slo_ms": self.default_slo_s * 1e3,
                           "outputs": list(OUTPUTS),
                           **self._image_parameters(),
                           "response_parameters": ["subnet_id", "subnet_accuracy", "batch_size",
                                                   "queue_ms", "service_ms", "deadline_met"]},
        }

    def _inputs(self) -> list[dict[str, Any]]:
        """FP32 `input`, and the BYTES `image` (encoded JPEG/PNG) when the input contract is
        known (codec.py)."""
        inputs = [{"name": "input", "datatype": "FP32", "shape": self.io.input_shape()}]
        if self.io.input_spec is not None:
            inputs.append({"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]})
        return inputs

    def _image_parameters(self) -> dict[str, Any]:
        """How an encoded image becomes the FP32 input (the family's InputSpec), and the
        classification extension's labels."""
        s = self.io.input_spec
        if s is None:
            return {}
        return {"image_input": {"formats": list(FORMATS), "json_content_type": "base64",
                                "max_pixels": self.io.max_image_pixels,
                                "resize_shorter_side": s.resize or max(s.height, s.width),
                                "center_crop": [s.height, s.width],
                                "interpolation": s.interpolation,
                                "channels": s.channels, "value_range": list(s.value_range),
                                "normalize_mean": list(s.mean), "normalize_std": list(s.std)},
                "classification": {"output": "logits", "labels": s.labels is not None}}

    # ------------------------------------------------------------------ infer
    def check_size(self, nbytes: int) -> None:
        if nbytes > self.max_body_bytes:
            raise PayloadTooLargeError(f"request payload of {nbytes} bytes exceeds the limit of "
                                       f"{self.max_body_bytes} bytes")

    def submit(self, images: np.ndarray, slo_s: float | None,
               arrival_s: float | None = None, on_done: OnDone | None = None
               ) -> asyncio.Future[InferenceResult]:
        """Admit (the synchronous half of `infer`): the router's future, which always
        resolves to the request's terminal result. Raises NoWorkerReadyError at once.
        `on_done(future)`: called once it is done, a batch's results as soon as the batch
        ends (Router.submit)."""
        if self.router.ready_workers == 0 and not self.router.draining:
            # nothing could serve it before its deadline: say so now (503), not as a 504 later
            raise NoWorkerReadyError("no worker is ready to serve requests (starting, or "
                                     "restarting after a failure); retry shortly")
        return self.router.submit(images, slo_s or self.default_slo_s, arrival_s, on_done)

    def refuse_if_late(self, arrival_s: float | None, images: Callable[[], int | None],
                       on_done: OnDone | None = None
                       ) -> asyncio.Future[InferenceResult] | None:
        """The deadline test at the door, before a request is decoded: a request whose first
        byte arrived at `arrival_s`, already too late under the default SLO for the fastest
        choice, ends DROPPED_DEADLINE now (its future, done; `on_done` as in `submit`) if
        `images()`, read from its raw bytes only then, says how many images it holds (None:
        it may name an SLO of its own; not judged here; a SuperServeError it raises, e.g. a
        wrong model, propagates). None: decode it and `submit` it (also with no worker ready:
        `submit` says 503)."""
        router = self.router
        if not self.late_at_door or arrival_s is None or router.ready_workers == 0 or \
                not router.late(arrival_s, self.default_slo_s):
            return None
        n = images()
        if n is None:
            return None
        return router.refuse_late(min(n, self.io.max_images), self.default_slo_s, arrival_s,
                                  on_done)

    async def infer(self, images: np.ndarray, slo_s: float | None,
                    arrival_s: float | None = None) -> InferenceResult:
        """Admit, wait for the terminal state, raise it if it is not a completion.
        `arrival_s`: when the request's first byte reached the server (the router's clock);
        its SLO counts from then. The front end calls `written` once the response is out."""
        fut = self.submit(images, slo_s, arrival_s)
        try:
            result = await fut
        except asyncio.CancelledError:  # the caller's task was cancelled: nobody waits now
            self.router.cancel(fut, "the client went away (disconnected, or a gRPC call "
                                    "cancelled or past its deadline)")
            raise
        result.raise_for_outcome()
        return result

    def now(self) -> float:
        """The router's clock (what `arrival_s` and `written` are measured on)."""
        return self.router.clock.now()

    def written(self, result: InferenceResult | None, delivered: bool = True) -> None:
        """The last byte of `result`'s response was written just now; `delivered=False`:
        its answer never went out whole (an error after the result, a failed write), so it
        counts as a miss in the SLO metrics rather than not at all."""
        if result is not None:
            self.router.response_written(
                result, self.router.clock.now() if delivered else math.inf)


_HTTP = [(InvalidInputError, 400), (ModelNotFoundError, 404), (PayloadTooLargeError, 413),
         (OverloadedError, 429), (ShuttingDownError, 503), (DeadlineExceededError, 504),
         (WorkerFailedError, 500), (UnsupportedEncodingError, 415),
         (UnauthenticatedError, 401), (NoWorkerReadyError, 503),
         (RequestCancelledError, 499)]  # nginx's "client closed request": nobody reads it
_GRPC = [(InvalidInputError, "INVALID_ARGUMENT"), (ModelNotFoundError, "NOT_FOUND"),
         (PayloadTooLargeError, "INVALID_ARGUMENT"), (OverloadedError, "RESOURCE_EXHAUSTED"),
         (ShuttingDownError, "UNAVAILABLE"), (DeadlineExceededError, "DEADLINE_EXCEEDED"),
         (WorkerFailedError, "INTERNAL"), (UnsupportedEncodingError, "INVALID_ARGUMENT"),
         (UnauthenticatedError, "UNAUTHENTICATED"), (NoWorkerReadyError, "UNAVAILABLE"),
         (RequestCancelledError, "CANCELLED")]


def http_status(exc: BaseException) -> int:
    for cls, status in _HTTP:
        if isinstance(exc, cls):
            return status
    return 500


def grpc_code_name(exc: BaseException) -> str:
    for cls, code in _GRPC:
        if isinstance(exc, cls):
            return code
    return "INTERNAL"
