"""KServe v2 gRPC front end: `inference.GRPCInferenceService` on grpc.aio.

Requests are deserialised here rather than by grpc, so that a malformed protobuf is answered
INVALID_ARGUMENT with a message (grpc's own deserialiser would answer INTERNAL), and so the
size limit is checked on the raw bytes. gRPC's transport limit is set to twice the payload
limit: bodies between the two get INVALID_ARGUMENT from us, larger ones RESOURCE_EXHAUSTED
from grpc itself.

Lifecycle: a call cancelled by its client, or past its own deadline, has its handler task
cancelled by grpc.aio; `InferenceService.infer` then ends the request as CANCELLED (what has
not started for it never does). Connections are bounded by `CHANNEL_OPTIONS`: keepalive pings
find dead peers, idle connections close, and every connection ages out (with a grace for
the calls on it), so a client that trickles a message in, or holds a call open, cannot keep
a connection (and, under `maximum_concurrent_rpcs`, a slot) forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np

from superserve.errors import InvalidInputError, SuperServeError
from superserve.server import proto
from superserve.server.codec import (
    decode_grpc_images,
    grpc_outputs,
    output_tensors,
    parse_slo_s,
    request_images,
    result_parameters,
    tensor_bytes,
)
from superserve.server.offload import run_blocking, should_offload
from superserve.server.service import InferenceService, grpc_code_name

log = logging.getLogger(__name__)

__all__ = ["start_grpc"]

SERVICE = "inference.GRPCInferenceService"

# Server-side connection bounds. gRPC has no per-message read timeout: a call whose message
# never completes is bounded only by its connection's age (+ grace). A call that did arrive
# is bounded by its deadline, or by the SLO the router enforces.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),  # ping a connection after 60 s without traffic
    ("grpc.keepalive_timeout_ms", 20_000),  # no ack within 20 s: the peer is gone, close
    ("grpc.max_connection_idle_ms", 300_000),  # no call for 5 min: close (a client reconnects)
    ("grpc.max_connection_age_ms", 1_800_000),  # GOAWAY after 30 min, clients reconnect ...
    ("grpc.max_connection_age_grace_ms", 60_000),  # ... and calls on it get 60 s to finish
]


def _params_to_dict(params: Any) -> dict[str, Any]:
    out = {}
    for k, v in params.items():
        which = v.WhichOneof("parameter_choice")
        out[k] = getattr(v, which) if which else None
    return out


def _set_param(params: Any, key: str, value: Any) -> None:
    p = params[key]
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def call_slo_s(slo_s: float | None, context: Any, elapsed_s: float,
               max_slo_s: float) -> float | None:
    """A request's SLO counted from its arrival, `elapsed_s` ago: its `slo_ms` / `timeout`
    parameter (`slo_s`; None: the server's default), capped by the call's own gRPC deadline,
    past which the client has given up whatever the server does. grpc computes that
    deadline when the call's headers arrive, before the handler runs (and a client that
    counts its SLO from when it meant to send sets it that much shorter), so it is the
    truer bound of the two: planning against it, and counting the SLO metric against it,
    sees the time the server cannot (the client's own send lag, grpc's queueing before the
    handler). A call without a deadline, or with one past `max_slo_s`, keeps `slo_s`."""
    left = context.time_remaining() if context is not None else None
    if left is None or left >= max_slo_s:
        return slo_s
    by_call = max(elapsed_s + left, 1e-6)  # already past: refused as a deadline miss
    return by_call if slo_s is None else min(slo_s, by_call)


class _Handlers:
    def __init__(self, service: InferenceService) -> None:
        self.s = service
        self.pb = proto.pb2()

    def _parse(self, cls: Any, raw: bytes) -> Any:
        try:
            return cls.FromString(raw)
        except Exception as e:  # noqa: BLE001 (protobuf raises DecodeError and others)
            raise InvalidInputError(f"malformed {cls.__name__} protobuf: {e}") from None

    async def server_live(self, raw: bytes) -> Any:
        return self.pb.ServerLiveResponse(live=self.s.live())

    async def server_ready(self, raw: bytes) -> Any:
        return self.pb.ServerReadyResponse(ready=self.s.ready())

    async def model_ready(self, raw: bytes) -> Any:
        req = self._parse(self.pb.ModelReadyRequest, raw)
        self.s.check_model(req.name, req.version)
        return self.pb.ModelReadyResponse(ready=self.s.ready())

    async def server_metadata(self, raw: bytes) -> Any:
        return self.pb.ServerMetadataResponse(**self.s.server_metadata())

    async def model_metadata(self, raw: bytes) -> Any:
        req = self._parse(self.pb.ModelMetadataRequest, raw)
        self.s.check_model(req.name, req.version)
        md = self.s.model_metadata()
        T = self.pb.ModelMetadataResponse.TensorMetadata
        return self.pb.ModelMetadataResponse(
            name=md["name"], versions=md["versions"], platform=md["platform"],
            inputs=[T(**t) for t in md["inputs"]], outputs=[T(**t) for t in md["outputs"]])

    async def _images(self, req: Any) -> np.ndarray:
        # the rules REST uses (codec.py); encoded images decoded off the loop
        return await request_images(decode_grpc_images(req, self.s.io), self.s.io)

    async def model_infer(self, raw: bytes, context: Any = None) -> Any:
        # grpc.aio hands over a whole message: the clock starts when the handler runs (the
        # earliest instant this process sees; the transport's own time is not exposed)
        resp, result = await self._infer(raw, context, self.s.now())
        done = getattr(context, "add_done_callback", None)
        if done is not None:  # the clock stops when grpc has written the reply and status
            done(lambda ctx: self.s.written(result, delivered=not ctx.cancelled()))
        else:
            self.s.written(result)
        return resp

    async def _infer(self, raw: bytes, context: Any, arrival_s: float) -> tuple[Any, Any]:
        """One ModelInferRequest's answer and its router result (unary and stream calls);
        the caller reports when the answer went out (`service.written`)."""
        self.s.check_size(len(raw))
        req = (await run_blocking(self._parse, self.pb.ModelInferRequest, raw)  # a big copy
               if should_offload(len(raw)) else self._parse(self.pb.ModelInferRequest, raw))
        self.s.check_model(req.model_name, req.model_version)
        names, classification = grpc_outputs(req, self.s.io)
        images = await self._images(req)
        slo_s = call_slo_s(parse_slo_s(_params_to_dict(req.parameters), self.s.io.max_slo_s),
                           context, self.s.now() - arrival_s, self.s.io.max_slo_s)
        result = await self.s.infer(images, slo_s, arrival_s)
        resp = self.pb.ModelInferResponse(model_name=self.s.model, model_version="1", id=req.id)
        for n, dt, a in output_tensors(result.logits, names, classification, self.s.io):
            resp.outputs.add(name=n, datatype=dt, shape=list(a.shape))
            resp.raw_output_contents.append(tensor_bytes(dt, a))
        for k, v in result_parameters(result).items():
            _set_param(resp.parameters, k, v)
        return resp, result

    async def model_stream_infer(self, requests: Any, context: Any) -> None:
        """ModelStreamInfer (Triton's streaming extension): every request on the stream is
        served concurrently and answered as it completes (not in order: the answer carries
        the request's id), errors as `error_message` answers, never by ending the stream.
        One call carries any number of requests, so grpc's per-call cost (~300 us of CPU,
        the most of a unary request) is paid once. Each request's SLO is its `slo_ms`
        parameter or the server's default (the stream's own deadline is not a request's).
        The stream ends once every request on it has been answered; a stream cancelled by
        its client cancels the requests still open on it (CANCELLED)."""
        lock = asyncio.Lock()  # one write at a time on a call
        open_tasks: set[asyncio.Task[None]] = set()

        async def one(raw: bytes, arrival_s: float) -> None:
            result, msg = None, None
            try:
                resp, result = await self._infer(raw, None, arrival_s)
                msg = self.pb.ModelStreamInferResponse(infer_response=resp)
            except SuperServeError as e:
                msg = self._stream_error(raw, grpc_code_name(e), str(e))
            except Exception as e:  # a bug: an INTERNAL answer with a name, and logged
                log.exception("gRPC stream request failed unexpectedly")
                msg = self._stream_error(raw, "INTERNAL", f"internal error: {type(e).__name__}")
            delivered = False
            try:
                async with lock:
                    await context.write(msg)
                delivered = True
            finally:
                if result is not None:
                    self.s.written(result, delivered=delivered)

        try:
            async for raw in requests:
                task = asyncio.ensure_future(one(raw, self.s.now()))
                open_tasks.add(task)
                task.add_done_callback(open_tasks.discard)
            while open_tasks:  # the client is done sending: answer what is still open
                await asyncio.wait(set(open_tasks))
        finally:
            for task in open_tasks:  # the stream was cancelled under us
                task.cancel()

    def _stream_error(self, raw: bytes, code: str, message: str) -> Any:
        resp = self.pb.ModelInferResponse(model_name=self.s.model, model_version="1")
        with contextlib.suppress(Exception):  # unparseable: the message says so; no id
            resp.id = self.pb.ModelInferRequest.FromString(raw).id
        _set_param(resp.parameters, "grpc_status", code)
        return self.pb.ModelStreamInferResponse(error_message=message, infer_response=resp)


def _wrap(fn: Callable[..., Awaitable[Any]],
          pass_context: bool = False) -> Callable[[bytes, Any], Awaitable[Any]]:
    async def handler(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await (fn(raw, context) if pass_context else fn(raw))
        except SuperServeError as e:
            code = getattr(grpc.StatusCode, grpc_code_name(e))
            if code == grpc.StatusCode.INTERNAL:
                log.error("gRPC request failed: %s", e)
            if _call_over(context):
                # The client is gone or its deadline has passed: grpc has ended (or is about
                # to end) the call, and a status sent now fails in grpc's core, which logs
                # an ERROR with a traceback per call (hundreds a second under overload).
                # The request has its terminal state in the router already.
                raise asyncio.CancelledError(f"call already over: {e}") from None
            await context.abort(code, str(e))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as e:  # a bug, not bad input: INTERNAL with a name, never UNKNOWN
            log.exception("gRPC request failed unexpectedly")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
    return handler


def _call_over(context: Any) -> bool:
    """Whether a call can no longer be answered: done, cancelled, or past its deadline."""
    try:
        if context.done() or context.cancelled():
            return True
        left = context.time_remaining()
    except Exception:  # noqa: BLE001  a context without these (tests): answer it
        return False
    return left is not None and left <= 0


async def start_grpc(service: InferenceService, host: str, port: int,
                     max_concurrent_rpcs: int | None = None, interceptors: Any = None,
                     credentials: Any = None) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server on (host, port); port 0 picks one. Returns (server, port).

    `max_concurrent_rpcs`: beyond it gRPC answers RESOURCE_EXHAUSTED at once, before the
    request is even parsed, so an overload the process cannot keep up with still gets an
    explicit status instead of a client-side timeout."""
    limit = 2 * service.max_body_bytes
    server = grpc.aio.server(maximum_concurrent_rpcs=max_concurrent_rpcs,
                             interceptors=interceptors,
                             options=[("grpc.max_receive_message_length", limit),
                                      ("grpc.max_send_message_length", limit),
                                      ("grpc.so_reuseport", 0), *CHANNEL_OPTIONS])
    h = _Handlers(service)
    ser = lambda m: m.SerializeToString()
    methods = {"ServerLive": h.server_live, "ServerReady": h.server_ready,
               "ModelReady": h.model_ready, "ServerMetadata": h.server_metadata,
               "ModelMetadata": h.model_metadata, "ModelInfer": h.model_infer}
    rpc = {name: grpc.unary_unary_rpc_method_handler(_wrap(fn, name == "ModelInfer"),
                                                     request_deserializer=None,
                                                     response_serializer=ser)
           for name, fn in methods.items()}
    rpc["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        h.model_stream_infer, request_deserializer=None, response_serializer=ser)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, rpc),))
    bound = server.add_secure_port(f"{host}:{port}", credentials) if credentials is not None \
        else server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    await server.start()
    return server, bound
