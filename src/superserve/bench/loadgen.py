"""Open-loop load generator for a KServe v2 server (HTTP or gRPC).

Requests leave at the trace's arrival times whatever the responses do (open loop, as in the
paper's evaluation): a late response never delays the next send. Each request carries one
held-out MNIST-5k test image and its label is kept, so the run reports the accuracy actually
achieved as well as the profiled accuracy of the subnets that served.

Every request ends in exactly one terminal outcome as the client saw it:

    completed         HTTP 200 / gRPC OK (deadline_met says whether within the SLO)
    dropped_deadline  HTTP 504 / DEADLINE_EXCEEDED (for a unary gRPC call also its own
                      deadline, the SLO from its scheduled send time, passing first)
    rejected          HTTP 429 or 503 / RESOURCE_EXHAUSTED or UNAVAILABLE
    failed            anything else, including a client-side timeout or a broken connection

SLO attainment counts a request as met when it completed and its end-to-end latency measured
by the client is within the SLO.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gc
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from superserve.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["LoadgenConfig", "RequestRecord", "plot_timeseries", "run_loadgen", "summarize", "write_csv"]

OUTCOMES = ("completed", "dropped_deadline", "rejected", "failed")


PROTOCOLS = ("http", "grpc", "grpc-stream")
GRPC_DEADLINES = ("slo", "timeout")


@dataclass(frozen=True)
class LoadgenConfig:
    url: str  # http://127.0.0.1:8000 (HTTP) or 127.0.0.1:8001 (gRPC)
    slo_ms: float = 50.0  # sent as the request's `slo_ms` parameter
    protocol: str = "http"  # "http" | "grpc" | "grpc-stream" (one ModelStreamInfer call)
    model: str = "resnet"
    timeout_s: float = 10.0  # client-side bound per request; past it the request is `failed`
    # gRPC unary calls: "slo" sets each call's deadline at its scheduled send time + the SLO
    # (what a client with an SLO sets: the server plans and counts against it, and a late
    # answer ends there as DEADLINE_EXCEEDED, a `dropped_deadline`); "timeout": timeout_s
    # from the send, so a late answer still arrives and its latency is measured
    grpc_deadline: str = "slo"
    max_duration_s: float = 900.0  # hard bound on a whole run (sending + draining)
    seed: int = 0  # picks which test images are sent

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if not self.slo_ms > 0:
            raise ConfigError(f"slo_ms must be > 0, got {self.slo_ms!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        if self.grpc_deadline not in GRPC_DEADLINES:
            raise ConfigError(f"grpc_deadline must be one of {GRPC_DEADLINES}, "
                              f"got {self.grpc_deadline!r}")
        host = self.url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("127."):
            raise ConfigError(f"the load generator only targets loopback addresses, got {self.url!r}")


@dataclass
class RequestRecord:
    index: int
    scheduled_s: float  # trace arrival time, relative to the run's start
    sent_s: float = math.nan  # actual send time, relative to the run's start
    outcome: str = "failed"
    status: str = ""  # HTTP status code or gRPC status name
    latency_ms: float = math.nan
    deadline_met: bool = False
    subnet_id: int = -1
    subnet_accuracy: float = math.nan
    batch_size: int = 0
    queue_ms: float = math.nan
    service_ms: float = math.nan
    label: int = -1
    predicted: int = -1
    correct: bool = False
    message: str = ""


# --------------------------------------------------------------------------- client seam
class _Client:
    """One protocol's way to send one image and fill a record."""

    async def infer(self, key: int, image: np.ndarray, rec: RequestRecord) -> None:  # pragma: no cover
        raise NotImplementedError

    async def prepare(self, concurrency: int) -> None:
        """Before the timed run: set up what `concurrency` requests in flight need."""

    async def close(self) -> None:  # pragma: no cover
        pass


def _fill_from_parameters(rec: RequestRecord, params: dict[str, Any]) -> None:
    rec.subnet_id = int(params.get("subnet_id", -1))
    rec.subnet_accuracy = float(params.get("subnet_accuracy", math.nan))
    rec.batch_size = int(params.get("batch_size", 0))
    rec.queue_ms = float(params.get("queue_ms", math.nan))
    rec.service_ms = float(params.get("service_ms", math.nan))


class _RawHttpClient(_Client):
    """KServe v2 REST over plain asyncio keep-alive connections, binary-data extension.

    The generator must cost far less CPU per request than the server it measures (on a 2-core
    machine they share a core): httpx spends ~1 ms of CPU per request here, this ~0.1 ms.
    Each request's bytes are built once per image; responses are parsed by httptools (the C
    parser uvicorn uses). One request in flight per connection (HTTP/1.1, no pipelining);
    connections are opened on demand up to `max_connections` and reused."""

    enforces_timeout = True

    def __init__(self, cfg: LoadgenConfig, max_connections: int = 512) -> None:
        base = cfg.url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = base.rpartition(":")
        self._host, self._port = host.strip("[]"), int(port or 80)
        self._path = f"/v2/models/{cfg.model}/infer"
        self._cfg = cfg
        self._head = json.dumps({"parameters": {"slo_ms": cfg.slo_ms},
                                 "outputs": [{"name": "predicted",
                                              "parameters": {"binary_data": False}}]})
        self._reqs: dict[int, bytes] = {}
        self._idle: list[_HttpConn] = []
        self._open = 0
        self._max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._conns: set[_HttpConn] = set()

    def request(self, key: int, image: np.ndarray, batched: bool = False) -> bytes:
        """The prebuilt request for `key`: one image, or with `batched` a whole [N, ...]
        batch of them in one request (the soak)."""
        b = self._reqs.get(key)
        if b is None:
            raw = np.ascontiguousarray(image, dtype="<f4").tobytes()
            head = json.loads(self._head)
            shape = list(image.shape) if batched else [1, *image.shape]
            head["inputs"] = [{"name": "input", "shape": shape, "datatype": "FP32",
                               "parameters": {"binary_data_size": len(raw)}}]
            jh = json.dumps(head).encode()
            b = self._reqs[key] = (
                f"POST {self._path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                f"Content-Type: application/octet-stream\r\n"
                f"Inference-Header-Content-Length: {len(jh)}\r\n"
                f"Content-Length: {len(jh) + len(raw)}\r\n\r\n").encode() + jh + raw
        return b

    async def prepare(self, concurrency: int) -> None:
        """Open the connections the run will need up front: at the start of a timed run,
        opening ~100 at once (one per request in flight) cost the first second ~500 SLO
        misses on the 2-core machine."""
        n = max(0, min(concurrency, self._max_connections) - len(self._idle))
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(loop.create_connection(_HttpConn, self._host, self._port) for _ in range(n)),
            return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise ConnectionError(f"cannot connect to {self._host}:{self._port}: {r}")
            self._conns.add(r[1])
            self._idle.append(r[1])

    async def _conn(self) -> _HttpConn:
        await self._slots.acquire()
        while self._idle:
            c = self._idle.pop()
            if c.usable:
                return c
            self._conns.discard(c)
        try:
            loop = asyncio.get_running_loop()
            _, c = await loop.create_connection(_HttpConn, self._host, self._port)
        except BaseException:
            self._slots.release()
            raise
        self._conns.add(c)
        return c

    async def infer(self, key: int, image: np.ndarray, rec: RequestRecord) -> None:
        data = self.request(key, image)
        c = await self._conn()
        try:
            status, body = await c.exchange(data, self._cfg.timeout_s)
        finally:
            if c.usable:
                self._idle.append(c)
            else:
                self._conns.discard(c)
            self._slots.release()
        rec.status = str(status)
        if status == 200:
            out = json.loads(body)
            _fill_from_parameters(rec, out.get("parameters") or {})
            rec.predicted = _predicted_from_outputs(out.get("outputs") or [])
            rec.outcome = "completed"
        else:
            rec.outcome = {504: "dropped_deadline", 429: "rejected", 503: "rejected"}.get(
                status, "failed")
            rec.message = body[:200].decode(errors="replace")

    async def close(self) -> None:
        for c in list(self._conns):
            c.close()
        self._conns.clear()
        self._idle.clear()


class _HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._keep_alive = True
        self.usable = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.usable = True

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception as e:  # noqa: BLE001  httptools.HttpParserError: a broken response
            self._fail(ConnectionError(f"malformed HTTP response: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        self._fail(ConnectionError(f"connection closed by the server{f': {exc}' if exc else ''}"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_result((self._parser.get_status_code(), b"".join(self._body)))
        self._body = []
        if not self._keep_alive:
            self.close()

    def _fail(self, exc: Exception) -> None:
        w, self._waiter = self._waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)
        if self._transport is not None:
            self.close()

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.close()

    async def exchange(self, data: bytes, timeout_s: float) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        self._waiter = w = loop.create_future()
        self.usable = False  # busy until the response is complete
        self._transport.write(data)  # type: ignore[union-attr]
        timer = loop.call_later(timeout_s, self._fail, TimeoutError(
            f"client timeout after {timeout_s} s"))
        try:
            result = await w
        finally:
            timer.cancel()
        self.usable = self._keep_alive and not self._transport.is_closing()  # type: ignore[union-attr]
        return result


def _predicted_from_outputs(outputs: list[dict[str, Any]]) -> int:
    by_name = {o.get("name"): o for o in outputs}
    if "predicted" in by_name:
        return int(by_name["predicted"]["data"][0])
    if "logits" in by_name:
        return int(np.argmax(by_name["logits"]["data"][:10]))
    return -1


class _GrpcClient(_Client):
    def __init__(self, cfg: LoadgenConfig) -> None:
        import grpc

        from superserve.server import proto

        self._pb, self._grpc = proto.pb2(), grpc
        target = cfg.url.split("://", 1)[-1]
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = proto.pb2_grpc().GRPCInferenceServiceStub(self._channel)
        self._cfg = cfg
        self._reqs: dict[int, Any] = {}

    def request(self, key: int, image: np.ndarray) -> Any:
        req = self._reqs.get(key)
        if req is None:
            pb = self._pb
            req = pb.ModelInferRequest(model_name=self._cfg.model)
            req.parameters["slo_ms"].double_param = float(self._cfg.slo_ms)
            t = req.inputs.add(name="input", datatype="FP32", shape=[1, *image.shape])
            t.contents.fp32_contents.extend(image.ravel().tolist())
            self._reqs[key] = req
        return req

    async def infer(self, key: int, image: np.ndarray, rec: RequestRecord) -> None:
        grpc = self._grpc
        try:
            resp = await self._stub.ModelInfer(self.request(key, image),
                                               timeout=self.call_timeout_s(rec))
        except grpc.aio.AioRpcError as e:
            code = e.code()
            rec.status = code.name
            rec.message = (e.details() or "")[:200]
            rec.outcome = {grpc.StatusCode.DEADLINE_EXCEEDED: "dropped_deadline",
                           grpc.StatusCode.RESOURCE_EXHAUSTED: "rejected",
                           grpc.StatusCode.UNAVAILABLE: "rejected"}.get(code, "failed")
            if (code == grpc.StatusCode.DEADLINE_EXCEEDED and "client" in rec.message.lower()
                    and self._cfg.grpc_deadline == "timeout"):
                rec.outcome = "failed"  # the client's own bound, not a deadline it set
            return
        rec.status = "OK"
        params = {k: _param_value(v) for k, v in resp.parameters.items()}
        _fill_from_parameters(rec, params)
        rec.predicted = _predicted_from_grpc(resp)
        rec.outcome = "completed"

    def call_timeout_s(self, rec: RequestRecord) -> float:
        """The call's gRPC timeout (`LoadgenConfig.grpc_deadline`): with "slo", what is left
        of the SLO counted from the scheduled send time (a call sent late gets that much
        less; one past it still goes out, with 1 ms, and ends a miss)."""
        if self._cfg.grpc_deadline == "timeout" or math.isnan(rec.sent_s):
            return self._cfg.timeout_s
        lag_s = rec.sent_s - rec.scheduled_s
        return min(max(self._cfg.slo_ms / 1e3 - lag_s, 1e-3), self._cfg.timeout_s)

    async def close(self) -> None:
        await self._channel.close()


def _param_value(p: Any) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _predicted_from_grpc(resp: Any) -> int:
    for i, out in enumerate(resp.outputs):
        if out.name == "predicted":
            if out.contents.int64_contents:
                return int(out.contents.int64_contents[0])
            if i < len(resp.raw_output_contents):
                return int(np.frombuffer(resp.raw_output_contents[i], dtype=np.int64)[0])
    for i, out in enumerate(resp.outputs):
        if out.name == "logits":
            vals = list(out.contents.fp32_contents) or \
                np.frombuffer(resp.raw_output_contents[i], dtype=np.float32).tolist()
            return int(np.argmax(vals[:10]))
    return -1


_GRPC_OUTCOMES = {"DEADLINE_EXCEEDED": "dropped_deadline", "RESOURCE_EXHAUSTED": "rejected",
                  "UNAVAILABLE": "rejected"}


class _GrpcStreamClient(_GrpcClient):
    """Every request on one ModelStreamInfer call (opened before the timed run), answers
    matched by request id: grpc's per-call cost is paid once, not per request."""

    def __init__(self, cfg: LoadgenConfig) -> None:
        super().__init__(cfg)
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._lock = asyncio.Lock()  # one write at a time on a call

    async def prepare(self, concurrency: int) -> None:
        self._call = self._stub.ModelStreamInfer()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self._call:
                fut = self._waiting.pop(msg.infer_response.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        except self._grpc.aio.AioRpcError as e:
            err: Exception = e
        else:
            err = ConnectionError("the stream ended with requests unanswered")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(err)
        self._waiting.clear()

    async def infer(self, key: int, image: np.ndarray, rec: RequestRecord) -> None:
        if self._call is None:
            await self.prepare(1)
        rid = f"s{next(self._ids)}"
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        try:
            async with self._lock:
                req = self.request(key, image)
                req.id = rid  # the cached message, re-labelled; written before the next one
                await self._call.write(req)
            msg = await asyncio.wait_for(fut, self._cfg.timeout_s)
        except TimeoutError:
            self._waiting.pop(rid, None)
            rec.status, rec.outcome, rec.message = "DEADLINE_EXCEEDED", "failed", "client timeout"
            return
        except (self._grpc.aio.AioRpcError, ConnectionError) as e:
            self._waiting.pop(rid, None)
            rec.status, rec.outcome, rec.message = "STREAM", "failed", str(e)[:200]
            return
        resp = msg.infer_response
        params = {k: _param_value(v) for k, v in resp.parameters.items()}
        if msg.error_message:
            rec.status = str(params.get("grpc_status", "UNKNOWN"))
            rec.message = msg.error_message[:200]
            rec.outcome = _GRPC_OUTCOMES.get(rec.status, "failed")
            return
        rec.status = "OK"
        _fill_from_parameters(rec, params)
        rec.predicted = _predicted_from_grpc(resp)
        rec.outcome = "completed"

    async def close(self) -> None:
        if self._call is not None:
            with contextlib.suppress(Exception):
                await self._call.done_writing()
            self._call.cancel()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await self._reader
        await super().close()


def _make_client(cfg: LoadgenConfig) -> _Client:
    if cfg.protocol == "http":
        return _RawHttpClient(cfg)
    return _GrpcStreamClient(cfg) if cfg.protocol == "grpc-stream" else _GrpcClient(cfg)


# --------------------------------------------------------------------------- the open loop
async def run_loadgen(cfg: LoadgenConfig, arrivals_s: Sequence[float], images: np.ndarray,
                      labels: np.ndarray, progress: Callable[[int, int], None] | None = None,
                      client: _Client | None = None,
                      on_record: Callable[[RequestRecord], None] | None = None
                      ) -> list[RequestRecord]:
    """Send one request per arrival time (seconds from the start), open loop; return one
    record per request, each in exactly one terminal outcome. `progress(done, n)` and
    `on_record(record)` (e.g. `bench.timeline.LiveProgress`) hear of each finished request."""
    arrivals = np.sort(np.asarray(arrivals_s, dtype=float))
    n = len(arrivals)
    if n == 0:
        return []
    if len(images) == 0 or len(images) != len(labels):
        raise ConfigError("the load generator needs test images with one label each")
    rng = np.random.default_rng(cfg.seed)
    picks = rng.integers(0, len(images), size=n)
    client = client or _make_client(cfg)
    records = [RequestRecord(index=i, scheduled_s=float(arrivals[i]),
                             label=int(labels[picks[i]])) for i in range(n)]
    done = 0
    loop = asyncio.get_running_loop()
    own_timeout = getattr(client, "enforces_timeout", False)  # else wait_for bounds each call

    async def one(rec: RequestRecord, key: int) -> None:
        nonlocal done
        t_send = time.perf_counter()
        rec.sent_s = t_send - t0
        try:
            if own_timeout:
                await client.infer(key, images[key], rec)
            else:
                await asyncio.wait_for(client.infer(key, images[key], rec),
                                       timeout=cfg.timeout_s)
        except TimeoutError:
            rec.outcome, rec.message = "failed", f"client timeout after {cfg.timeout_s} s"
        except Exception as e:  # a broken connection is a failed request, never a lost one
            rec.outcome, rec.message = "failed", f"{type(e).__name__}: {e}"[:200]
        rec.latency_ms = (time.perf_counter() - t_send) * 1e3
        rec.deadline_met = rec.outcome == "completed" and rec.latency_ms <= cfg.slo_ms
        rec.correct = rec.outcome == "completed" and rec.predicted == rec.label
        done += 1
        if progress is not None:
            progress(done, n)
        if on_record is not None:
            on_record(rec)

    # the requests still in flight: asyncio.wait over all of them at the end would stall the
    # loop for ~0.1 s at 40,000 tasks (a callback added to each) while the last responses
    # are being read, a client-made dip in the run's last second
    pending: set[asyncio.Task[None]] = set()
    # no cyclic GC while timing: a full collection over tens of thousands of live records
    # stalls the event loop for tens of ms (seen as 45-60 ms of client-side latency in a
    # burst); the run is bounded in count and time, so memory stays bounded
    if hasattr(client, "prepare"):  # outside the timed run
        await client.prepare(_peak_in_flight(arrivals, cfg.slo_ms / 1e3))
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    t0 = time.perf_counter()
    t_limit = t0 + cfg.max_duration_s
    try:
        for rec in records:
            target = t0 + rec.scheduled_s
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() > t_limit:
                break
            task = loop.create_task(one(rec, int(picks[rec.index])))
            pending.add(task)
            task.add_done_callback(pending.discard)
        remaining = max(0.0, t_limit - time.perf_counter()) + cfg.timeout_s
        if pending:
            await asyncio.wait(pending, timeout=remaining)
    finally:
        left = list(pending)
        for t in left:
            t.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await client.close()
        gc.unfreeze()
        if gc_was_enabled:
            gc.enable()
    for rec in records:  # not sent within the run's bound: says so, never silently absent
        if math.isnan(rec.sent_s):
            rec.outcome, rec.message = "failed", "not sent: run exceeded max_duration_s"
    return records


def _peak_in_flight(arrivals: np.ndarray, window_s: float) -> int:
    """Most arrivals within any `window_s`: requests in flight if each takes that long."""
    ends = np.searchsorted(arrivals, arrivals + window_s, side="right")
    return int((ends - np.arange(len(arrivals))).max()) if len(arrivals) else 0


# --------------------------------------------------------------------------- reporting
def summarize(records: Sequence[RequestRecord], slo_ms: float) -> dict[str, Any]:
    n = len(records)
    outcomes = {k: 0 for k in OUTCOMES}
    for r in records:
        outcomes[r.outcome] += 1
    met = [r for r in records if r.deadline_met]
    lat = np.array([r.latency_ms for r in records if r.outcome == "completed"], dtype=float)
    lags = [r.sent_s - r.scheduled_s for r in records if not math.isnan(r.sent_s)]
    accs = [r.subnet_accuracy for r in met if not math.isnan(r.subnet_accuracy)]
    return {
        "requests": n,
        "slo_ms": slo_ms,
        "slo_attainment": len(met) / n if n else 0.0,
        "mean_serving_accuracy": float(np.mean(accs)) if accs else 0.0,
        "realized_accuracy": sum(r.correct for r in met) / len(met) if met else 0.0,
        "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
        "latency_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
        "outcomes": outcomes,
        "completed_late": sum(1 for r in records if r.outcome == "completed" and not r.deadline_met),
        "max_send_lag_ms": max(lags) * 1e3 if lags else 0.0,
        # the stricter count: latency from the trace's scheduled time, the generator's own
        # send lag included (what a client would see if it were never late)
        "slo_attainment_from_schedule": sum(
            1 for r in records if r.deadline_met
            and r.latency_ms + (r.sent_s - r.scheduled_s) * 1e3 <= slo_ms) / n if n else 0.0,
        "duration_s": max((r.scheduled_s for r in records), default=0.0),
    }


def write_csv(records: Sequence[RequestRecord], path: str | Path) -> None:
    fields = list(RequestRecord.__dataclass_fields__)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in records:
            w.writerow(asdict(r))


def plot_timeseries(records: Sequence[RequestRecord], path: str | Path, title: str = "",
                    bin_s: float = 1.0) -> None:
    """The paper's Fig. 8c, live: request rate, chosen subnet accuracy, batch size and SLO
    misses per time bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not records:
        return
    t = np.array([r.scheduled_s for r in records])
    nbins = max(1, int(math.ceil((t.max() + 1e-9) / bin_s)))
    idx = np.minimum((t / bin_s).astype(int), nbins - 1)
    x = (np.arange(nbins) + 0.5) * bin_s
    rate = np.bincount(idx, minlength=nbins) / bin_s
    miss = np.bincount(idx, weights=[0.0 if r.deadline_met else 1.0 for r in records],
                       minlength=nbins)
    acc_w = np.array([r.subnet_accuracy if r.outcome == "completed" else 0.0 for r in records])
    acc_n = np.array([1.0 if r.outcome == "completed" else 0.0 for r in records])
    acc_w = np.nan_to_num(acc_w)
    bs_w = np.array([float(r.batch_size) if r.outcome == "completed" else 0.0 for r in records])
    served = np.bincount(idx, weights=acc_n, minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=acc_w, minlength=nbins) / served * 100.0
        bs = np.bincount(idx, weights=bs_w, minlength=nbins) / served
    fig, axes = plt.subplots(4, 1, figsize=(9, 8), sharex=True)
    axes[0].plot(x, rate, color="tab:blue")
    axes[0].set_ylabel("requests/s")
    axes[1].plot(x, acc, color="tab:green")
    axes[1].set_ylabel("subnet acc. (%)")
    axes[2].plot(x, bs, color="tab:orange")
    axes[2].set_ylabel("mean batch")
    axes[3].bar(x, miss, width=bin_s * 0.9, color="tab:red")
    axes[3].set_ylabel("SLO misses")
    axes[3].set_xlabel("time (s)")
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
