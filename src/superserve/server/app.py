"""Wiring: one asyncio loop runs the router, uvicorn (REST) and grpc.aio together.

`start_server` takes ready-made parts (policy, worker pool), so tests start a real server on
ephemeral 127.0.0.1 ports with the fake pool; `build_and_serve` is what `superserve serve`
runs: it loads the table, builds the policy and the process pool, serves until SIGTERM or
SIGINT, then drains (stop admitting with 503, finish or answer what is queued) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from dataclasses import dataclass
from typing import Any

from superserve.profiling.table import ProfileTable
from superserve.runtime.clock import LoopClock
from superserve.runtime.protocol import WorkerPool
from superserve.runtime.router import Router, RouterConfig
from superserve.scheduling.base import Policy
from superserve.scheduling.batching import BatchWaitConfig
from superserve.scheduling.calibration import CalibrationConfig
from superserve.scheduling.feedback import FeedbackConfig
from superserve.server.codec import ModelIO
from superserve.server.config import ServeConfig
from superserve.server.http_api import FIRST_BYTE_KEY
from superserve.server.metrics import ServerMetrics
from superserve.server.service import InferenceService

log = logging.getLogger(__name__)

__all__ = ["RunningServer", "build_and_serve", "start_server"]


@dataclass
class RunningServer:
    config: ServeConfig
    service: InferenceService
    router: Router
    pool: WorkerPool
    metrics: ServerMetrics
    http_port: int
    grpc_port: int  # -1 when gRPC is off
    _uvicorn: Any
    _http_task: asyncio.Task[None]
    _grpc: Any

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until at least one worker is ready (bounded)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while self.router.ready_workers == 0:
            if loop.time() > end:
                raise TimeoutError(f"no worker became ready within {timeout_s} s")
            await asyncio.sleep(0.02)

    async def stop(self, drain_timeout_s: float | None = None) -> int:
        """Graceful stop: refuse new requests, serve or answer the admitted ones, close the
        front ends and the workers. Returns how many requests had to be refused at the end."""
        timeout = self.config.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        refused = await self.router.drain(timeout)
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        self._uvicorn.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self._http_task, timeout=5.0)
        await self.pool.close()
        self.router.close()
        log.info("server stopped (%d requests refused while draining)", refused)
        return refused


def _stamped_protocol(direct: Any = None, socket_wait: bool = True) -> type:
    """uvicorn's httptools protocol that stamps every request's scope with the time at
    which the read holding its first byte was handled (`FIRST_BYTE_KEY`): the request's clock
    starts there, before parsing, body reading and decoding, and before it waits for a busy
    loop to reach the application. With `socket_wait` (Linux, TCP), moved back by how long
    those bytes had sat in the kernel's socket buffer before the loop read them
    (server/rx_wait.py), the wait in a loop's accept backlog included: a client that sends
    right after connecting to a busy server waits there too."""
    from time import monotonic

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from superserve.server.rx_wait import socket_wait_reader

    class StampedHttpToolsProtocol(HttpToolsProtocol):
        _rx_s = 0.0
        _rx_wait: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            if socket_wait:
                self._rx_wait = socket_wait_reader(transport.get_extra_info("socket"))
            super().connection_made(transport)

        def data_received(self, data: bytes) -> None:
            now = monotonic()  # the router's clock (runtime/clock.LoopClock)
            if self._rx_wait is not None:
                now -= self._rx_wait()
            self._rx_s = now
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[FIRST_BYTE_KEY] = self._rx_s  # type: ignore[literal-required]

    if direct is None:
        return StampedHttpToolsProtocol
    from superserve.server.direct_http import direct_protocol, uvicorn_supports_direct

    if not uvicorn_supports_direct(HttpToolsProtocol):  # a uvicorn whose internals moved
        log.warning("this uvicorn's HTTP protocol lacks what the direct infer route relies "
                    "on; infer requests take the ASGI route (slower)")
        return StampedHttpToolsProtocol

    # infer requests answered by the protocol itself, without ASGI (server/direct_http.py)
    return direct_protocol(StampedHttpToolsProtocol, direct)


def _guarded(protocol: type, read_timeout_s: float | None) -> type:
    """Slow clients: a whole request must arrive within read_timeout_s (server/limits.py)."""
    if read_timeout_s is None:
        return protocol
    from superserve.server.limits import guarded_protocol

    return guarded_protocol(protocol, read_timeout_s)


class _Uvicorn:
    """uvicorn.Server without its signal capture: the serve command owns SIGTERM."""

    @staticmethod
    def make(app: Any, limit_concurrency: int | None = None,
             read_timeout_s: float | None = None, keep_alive_s: float = 30.0,
             socket_wait: bool = True, **ssl: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def capture_signals(self) -> contextlib.AbstractContextManager[None]:
                return contextlib.nullcontext()

        # beyond limit_concurrency open requests uvicorn answers 503 at once (an overload the
        # process cannot parse fast enough still gets an explicit status); the router's own
        # bounded queue answers 429 well before that
        # proxy_headers off: nothing here reads the client address, and uvicorn's
        # X-Forwarded-* middleware would wrap every request
        cfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                             timeout_keep_alive=keep_alive_s, limit_concurrency=limit_concurrency,
                             proxy_headers=False,
                             http=_guarded(_stamped_protocol(getattr(app, "direct", None),
                                                             socket_wait),
                                           read_timeout_s), **ssl)
        return Server(cfg)


async def start_server(cfg: ServeConfig, table: ProfileTable, policy: Policy,
                       pool: WorkerPool, model_name: str | None = None,
                       io: ModelIO | None = None) -> RunningServer:
    """Start the router and both front ends on the running loop; ports 0 pick free ones."""
    from superserve.server.grpc_api import start_grpc
    from superserve.server.http_api import build_app

    name = model_name or table.family
    io = io or ModelIO(max_images=cfg.max_images)
    # read first: a bad token file or certificate fails before anything starts
    from superserve.server.tls import grpc_server_credentials, uvicorn_ssl_kwargs

    auth = None
    if cfg.auth_token_file is not None:
        from superserve.server.auth import Authenticator

        auth = Authenticator.from_file(cfg.auth_token_file, cfg.auth_open_health)
    credentials = grpc_server_credentials(cfg.tls_cert, cfg.tls_key)  # None: plaintext
    router = Router(policy, pool, LoopClock(), RouterConfig(
        max_queue=cfg.max_queue, max_images_per_request=cfg.max_images,
        overhead_s=cfg.overhead_s, calibrate=cfg.calibrate,
        calibration=CalibrationConfig(linear_tail=cfg.calibration_tail == "linear",
                                      quantile=cfg.calibration_quantile),
        feedback=FeedbackConfig() if cfg.miss_feedback else None,
        batch_wait=BatchWaitConfig(wait_s=cfg.batch_wait_s) if cfg.batch_wait_s > 0 else None,
        batch_log=cfg.batch_log or ""))
    metrics = ServerMetrics(lambda: router.queue_depth, lambda: router.ready_workers, router)
    router.listener = metrics
    service = InferenceService(name, router, table, io, cfg.default_slo_s, cfg.max_body_bytes,
                               late_at_door=cfg.late_at_door)
    router.start()

    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without it, a keep-alive client's next request waits
    # ~40 ms (Nagle holds the response body behind the client's delayed ACK of the headers)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((cfg.host, cfg.http_port))
    sock.listen(1024)
    sock.setblocking(False)
    http_port = sock.getsockname()[1]
    server = _Uvicorn.make(build_app(service, metrics, auth),
                           limit_concurrency=2 * cfg.max_queue + 64,
                           read_timeout_s=cfg.request_read_timeout_s,
                           keep_alive_s=cfg.keep_alive_timeout_s,
                           socket_wait=cfg.socket_wait,
                           **uvicorn_ssl_kwargs(cfg.tls_cert, cfg.tls_key))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    grpc_server, grpc_port = None, -1
    try:
        if cfg.grpc_port >= 0:
            grpc_server, grpc_port = await start_grpc(
                service, cfg.host, cfg.grpc_port, max_concurrent_rpcs=2 * cfg.max_queue,
                interceptors=None if auth is None else [_grpc_auth(auth)],
                credentials=credentials)
        while not server.started:  # uvicorn startup is quick; bounded by the task's fate
            if task.done():
                task.result()
                raise OSError("HTTP server exited during startup")
            await asyncio.sleep(0.005)
    except BaseException:
        server.should_exit = True
        await pool.close()
        raise
    log.info("serving model %r (%d subnets, policy %s) on http://%s:%d and grpc %s:%d",
             name, len(table), getattr(policy, "name", type(policy).__name__), cfg.host,
             http_port, cfg.host, grpc_port)
    return RunningServer(cfg, service, router, pool, metrics, http_port, grpc_port, server,
                         task, grpc_server)


def _grpc_auth(auth: Any) -> Any:
    from superserve.server.auth import grpc_interceptor

    return grpc_interceptor(auth)


async def build_and_serve(cfg: ServeConfig, on_ready: Any = None) -> int:
    """`superserve serve`: build the parts from the config, serve until SIGTERM/SIGINT."""
    from superserve.runtime.backends import make_pool
    from superserve.runtime.worker import WorkerConfig
    from superserve.server.components import FAMILIES, load_policy, model_io, resolve_table

    table, table_path, norm_path = resolve_table(cfg.model, cfg.table,
                                                   check_family=cfg.worker_kind == "torch")
    if cfg.latency_scale != 1.0:  # the policy plans with the margin; workers run as they run
        table = table.scaled(cfg.latency_scale)
    policy = load_policy(cfg.policy, table, slo_s=cfg.default_slo_s, workers=cfg.workers)
    # the input contract (shape, the JPEG/PNG input): the family's, read without torch for a
    # built-in family
    io = model_io(cfg.model, cfg.weights, cfg.max_images, needs_model=cfg.worker_kind == "torch",
                  labels_file=cfg.labels_file, max_image_pixels=cfg.max_image_pixels)
    wcfg = WorkerConfig(kind=cfg.worker_kind, model=cfg.model, table_path=str(table_path),
                        norm_path=str(norm_path), threads=cfg.threads_per_worker,
                        weights=cfg.weights, warmup_budget_s=cfg.warmup_budget_s,
                        device=cfg.device, devices=cfg.devices,
                        separate_models=cfg.policy.startswith("infaas") and cfg.worker_kind == "torch")
    pool = make_pool(cfg, wcfg)  # local processes or Ray actors (runtime/backends.py)
    log.info("model %s, table %s (%d subnets, %s), policy %s, %d worker(s) x %d thread(s)",
             cfg.model, table_path, len(table), table.device, cfg.policy, cfg.workers,
             cfg.threads_per_worker)
    # the API names the model after its family; a checkpoint path serves under its table's family
    model_name = cfg.model if cfg.model in FAMILIES else table.family
    running = await start_server(cfg, table, policy, pool, model_name=model_name, io=io)
    # everything built so far lives as long as the server: keep it out of the cyclic GC's scans,
    # so a full collection walks only per-request objects (short pauses on the serving path)
    gc.collect()
    gc.freeze()
    # and collect the young generation 10x less often: a request allocates a few dozen
    # tracked containers (parsed JSON, futures, results), so the default threshold (700)
    # ran a collection every ~20 requests, ~4% of the router's CPU at 2,000 req/s
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 7000), gen1, gen2)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        waiting = asyncio.ensure_future(running.wait_ready(timeout_s=600.0))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([waiting, stopping], return_when=asyncio.FIRST_COMPLETED)
        if waiting.done():
            waiting.result()  # a startup timeout raises here
            log.info("ready: %d worker(s) loaded", running.router.ready_workers)
            if on_ready is not None:
                on_ready(running)
        else:
            waiting.cancel()
        await stopping
        log.info("signal received: draining")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await running.stop()
    return 0
