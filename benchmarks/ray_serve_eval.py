"""The router as a Ray Serve application behind Ray's HTTP proxy vs the standalone router.

    python benchmarks/ray_serve_eval.py [--n 300] [--rates 100 200 400 800] [--duration 10]
        [--workers 2] [--json OUT]

Both front ends run the SAME router, policy (SlackFit on the shipped resnet table), KServe v2
JSON codec and worker kind: the in-process profile-driven pool (runtime/fake.py: a batch
"runs" for its profiled latency on the loop, no processes), so the only difference is the
path a request takes to the router and back:

    standalone   client -> uvicorn in the router's process -> router
    Ray Serve    client -> Serve's HTTP proxy (an actor) -> Ray actor call -> the one replica
                 holding the router (a deployment, num_replicas=1) -> router

1. Per-request overhead: closed loop (one request at a time, keep-alive), zero-latency
   worker, `--n` requests per front end after warm-up, interleaved in rounds of 50;
   client-measured p50 / p99 in ms.
2. Capacity: open loop, bursty (CV^2 4), SLO 50 ms, `--workers` profile workers, each rate
   for `--duration` s on each front end (interleaved); attainment, served accuracy, and the
   highest rate at >= 0.99.

Both servers run at once, on 127.0.0.1 (Ray: a local one-node cluster started here and
stopped at the end). Needs `ray[serve]` (the `ray-serve` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only

SLO_MS = 50.0
APP = "superserve"  # the Serve application's name


def _parts(latency_scale: float, workers: int) -> tuple[Any, Any, Any]:
    """The shared table, policy and a fresh profile-driven pool (call on the running loop)."""
    from superserve.profiling import default_table_path
    from superserve.profiling.table import ProfileTable
    from superserve.runtime.clock import LoopClock
    from superserve.runtime.fake import FakePool
    from superserve.server.components import load_policy

    table = ProfileTable.load(default_table_path("resnet"))
    policy = load_policy("slackfit", table, slo_s=SLO_MS / 1e3, workers=workers)
    return table, policy, FakePool(table, LoopClock(), workers, latency_scale=latency_scale)


# --------------------------------------------------------------------------- standalone
async def _standalone(port: int, latency_scale: float, workers: int) -> None:
    from superserve.server.app import start_server
    from superserve.server.config import ServeConfig

    table, policy, pool = _parts(latency_scale, workers)
    running = await start_server(ServeConfig(http_port=port, grpc_port=-1), table, policy, pool,
                                 model_name="resnet")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await running.stop(drain_timeout_s=2.0)


# --------------------------------------------------------------------------- Ray Serve
def _deployment() -> Any:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(num_replicas=1, max_ongoing_requests=2048,
                      ray_actor_options={"num_cpus": 0})
    class SuperserveRouter:
        """The router (and its profile-driven workers) inside one Serve replica; requests
        reach it as Ray actor calls from the proxy."""

        def __init__(self, latency_scale: float, workers: int) -> None:
            self.latency_scale, self.workers = latency_scale, workers
            self.service: Any = None
            self.lock: asyncio.Lock | None = None

        async def _start(self) -> Any:
            # the router needs the loop that runs the requests: built on the first one
            if self.lock is None:
                self.lock = asyncio.Lock()
            async with self.lock:
                if self.service is None:
                    from superserve.runtime.router import Router, RouterConfig
                    from superserve.server.codec import ModelIO
                    from superserve.server.service import InferenceService

                    table, policy, pool = _parts(self.latency_scale, self.workers)
                    router = Router(policy, pool, pool.clock, RouterConfig())
                    router.start()
                    while router.ready_workers < self.workers:
                        await asyncio.sleep(0.01)
                    self.service = InferenceService("resnet", router, table, ModelIO(),
                                                    SLO_MS / 1e3, 64 * 1024 * 1024)
            return self.service

        async def __call__(self, request: Request) -> Response:
            from superserve.errors import SuperServeError
            from superserve.server.codec import HEADER_LENGTH, decode_http, encode_http
            from superserve.server.service import http_status

            service = self.service or await self._start()
            arrival_s = service.now()  # the proxy hop before this is invisible to the router
            result = None
            try:
                body = await request.body()
                hl = request.headers.get(HEADER_LENGTH)
                decoded = decode_http(body, hl, service.io)
                result = await service.infer(decoded.images, decoded.slo_s, arrival_s)
                content, headers = encode_http(decoded, result, service.model)
                return Response(content, headers=headers)
            except SuperServeError as e:
                return Response(json.dumps({"error": str(e)}), status_code=http_status(e),
                                media_type="application/json")
            finally:  # Serve writes the answer later, in the proxy: the last moment seen here
                service.written(result)

    return SuperserveRouter


def _start_serve(port: int, latency_scale: float, workers: int) -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False,
                 object_store_memory=100 * 1024 * 1024)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(_deployment().bind(latency_scale, workers), name=APP, route_prefix="/")


# --------------------------------------------------------------------------- measurement
def _body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                   "data": x.reshape(-1).tolist()}],
                       "parameters": {"slo_ms": SLO_MS}}).encode()


def _wait_up(url: str, body: bytes, timeout_s: float = 120.0) -> None:
    import httpx

    end = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.post(url, content=body, timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"{url} never answered 200")
        time.sleep(0.2)


def _overhead(urls: dict[str, str], body: bytes, n: int) -> dict[str, dict[str, float]]:
    import httpx

    lat: dict[str, list[float]] = {k: [] for k in urls}
    with httpx.Client(timeout=10) as c:
        for name, url in urls.items():  # warm-up
            for _ in range(30):
                c.post(url, content=body)
        for _ in range(max(1, n // 50)):
            for name, url in urls.items():
                for _ in range(50):
                    t0 = time.perf_counter()
                    r = c.post(url, content=body)
                    lat[name].append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
    return {k: {"p50_ms": round(float(np.percentile(v, 50)) * 1e3, 3),
                "p99_ms": round(float(np.percentile(v, 99)) * 1e3, 3), "n": len(v)}
            for k, v in lat.items()}


def _capacity(name: str, url: str, rate: float, duration: float) -> dict[str, Any]:
    from superserve.bench.loadgen import LoadgenConfig, run_loadgen, summarize
    from superserve.data import load_mnist
    from superserve.traces import load_trace

    x, y = load_mnist().test
    arrivals = load_trace(f"bursty:base={rate / 2},variant={rate / 2},cv2=4,"
                          f"duration={duration},seed=0").arrivals_s
    cfg = LoadgenConfig(url=url, slo_ms=SLO_MS, protocol="http",
                        max_duration_s=duration + 60.0)
    s = summarize(asyncio.run(run_loadgen(cfg, arrivals, x, y)), SLO_MS)
    return {"frontend": name, "rate": rate, "requests": s["requests"],
            "slo_attainment": round(s["slo_attainment"], 4),
            "mean_serving_accuracy": round(s["mean_serving_accuracy"], 4),
            "latency_ms_p50": s["latency_ms_p50"], "latency_ms_p99": s["latency_ms_p99"],
            "outcomes": s["outcomes"]}


def _phase(args: argparse.Namespace, latency_scale: float, workers: int,
           std_port: int) -> tuple[dict[str, str], Any]:
    """Both servers up: a standalone child process and a Serve application (its proxy stays
    on --port + 1 for the whole run)."""
    std = subprocess.Popen([sys.executable, __file__, "--_standalone", str(std_port),
                            str(latency_scale), str(workers)], stdout=subprocess.PIPE, text=True)
    assert std.stdout is not None and std.stdout.readline().strip() == "ready"
    _start_serve(args.port + 1, latency_scale, workers)
    urls = {"standalone": f"http://127.0.0.1:{std_port}",
            "ray_serve": f"http://127.0.0.1:{args.port + 1}"}
    return urls, std


def _stop(std: Any) -> None:
    from ray import serve

    serve.delete(APP)
    std.send_signal(signal.SIGTERM)
    try:
        std.wait(20)
    except subprocess.TimeoutExpired:
        std.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--rates", type=float, nargs="+", default=[100, 200, 400, 800])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=18400)
    ap.add_argument("--json", default=None)
    ap.add_argument("--_standalone", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._standalone:
        port, scale, workers = args._standalone
        asyncio.run(_standalone(int(port), float(scale), int(workers)))
        return 0
    import ray
    from ray import serve

    from superserve.data import load_mnist

    body = _body(load_mnist().test[0][0])
    out: dict[str, Any] = {"overhead": {}, "capacity": []}
    try:
        # 1. per-request overhead, zero-latency workers
        urls, std = _phase(args, 0.0, 1, args.port)
        try:
            infer = {k: f"{u}/v2/models/resnet/infer" for k, u in urls.items()}
            for u in infer.values():
                _wait_up(u, body)
            out["overhead"] = _overhead(infer, body, args.n)
        finally:
            _stop(std)
        print("per-request latency, zero-latency worker, closed loop (ms):")
        for k, v in out["overhead"].items():
            print(f"  {k:10s} p50 {v['p50_ms']:7.3f}  p99 {v['p99_ms']:7.3f}  (n={v['n']})")
        # 2. capacity with profile workers
        urls, std = _phase(args, 1.0, args.workers, args.port + 2)
        try:
            for u in urls.values():
                _wait_up(f"{u}/v2/models/resnet/infer", body)
            print(f"{'frontend':10s} {'rate':>6s} {'attain':>7s} {'acc %':>6s} {'p50':>6s} "
                  f"{'p99':>6s}  outcomes", flush=True)
            for rate in args.rates:
                for name, url in urls.items():
                    r = _capacity(name, url, rate, args.duration)
                    out["capacity"].append(r)
                    print(f"{name:10s} {rate:6g} {r['slo_attainment']:7.4f} "
                          f"{100 * r['mean_serving_accuracy']:6.2f} "
                          f"{r['latency_ms_p50'] or float('nan'):6.1f} "
                          f"{r['latency_ms_p99'] or float('nan'):6.1f}  {r['outcomes']}",
                          flush=True)
        finally:
            _stop(std)
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
    for name in ("standalone", "ray_serve"):
        ok = [r for r in out["capacity"] if r["frontend"] == name and r["slo_attainment"] >= 0.99]
        best = max(ok, key=lambda r: r["rate"]) if ok else None
        out[f"best_{name}"] = best and {"rate": best["rate"],
                                        "accuracy": best["mean_serving_accuracy"]}
        print(f"{name}: highest rate at >= 0.99 attainment: "
              + (f"{best['rate']:g} req/s, accuracy {100 * best['mean_serving_accuracy']:.2f}%"
                 if best else "none of the rates tried"))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
