"""The client's own floor: the independent JSON client against a server that answers at once.

`calibration_live.py --protocol json` charges every request from its SCHEDULED send time, and
the client (benchmarks/open_loop_client.py: aiohttp, KServe v2 JSON) runs on CPU 0 beside the
router. In a CV^2 4 burst the client alone must build, send, read and parse hundreds of requests
within the SLO, so some are late whatever the server does. This measures how many: the same
client, command line and traces as `calibration_live.py`, against a null KServe v2 server that
parses each request's HTTP framing and answers it at once with a canned, valid response (ten
logits, `subnet_accuracy` 1.0), no model, no router, no batching.

Two placements of the null server:
  cpu1   alone on CPU 1 (the worker's core): the client's floor on CPU 0 by itself, an upper
         bound for every policy in the split placement;
  cpu0   on CPU 0 with the client (where the router sits in the split placement): the floor
         with the cheapest possible front end sharing the client's core.
A policy's client attainment cannot exceed its placement's floor by more than noise; where the
floor is below a target, the target is out of reach on this machine with this client.

    python benchmarks/client_floor.py [--rates 500 1000 1500 2000] [--places cpu1 cpu0]
        [--reps 1] [--out results/client_floor.json]

Prints one row per (rate, placement, repetition): client attainment, p99 latency, the largest
send lag, and the client's CPU per request. Loopback only; every run is bounded by the trace's
duration plus the client's timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from calibration_live import cleanup, free_port, start, trace_spec

# what the null server answers: the shape `superserve serve` answers a one-image request with
# (what open_loop_client.py reads: the logits' argmax and parameters.subnet_accuracy)
_BODY = json.dumps({
    "model_name": "resnet", "id": "",
    "outputs": [{"name": "logits", "shape": [1, 10], "datatype": "FP32",
                 "data": [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}],
    "parameters": {"subnet": 0, "subnet_accuracy": 1.0}}, separators=(",", ":")).encode()
_RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
             + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


def serve_null(port: int) -> None:
    """Answer every HTTP/1.1 request on 127.0.0.1:port with _RESPONSE, keep-alive, until
    SIGTERM. httptools frames the requests (what uvicorn parses with)."""
    import httptools

    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass

    class Null(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_message_complete(self) -> None:
            self.transport.write(_RESPONSE)  # type: ignore[attr-defined]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        server = await loop.create_server(Null, "127.0.0.1", port, backlog=4096)
        print("null server: ready", flush=True)
        await stop
        server.close()

    asyncio.run(main())


def run_cell(rate: float, place: str, rep: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    cpu = "1" if place == "cpu1" else "0"
    srv = start(["taskset", "-c", cpu, sys.executable, str(Path(__file__).resolve()),
                 "--serve", str(port)], stdout=subprocess.PIPE, text=True)
    assert srv.stdout is not None
    if "ready" not in srv.stdout.readline():
        raise SystemExit(f"client_floor: the null server on port {port} did not start")
    spec = trace_spec("bursty", rate, args.duration_s, args.seed)
    tag = f"client_floor_{place}_{rate:g}" + (f"_r{rep}" if rep else "")
    out = args.out.parent / f"{tag}.client.json"
    cmd = ["taskset", "-c", "0", sys.executable, str(HERE / "open_loop_client.py"),
           "--url", f"http://127.0.0.1:{port}", "--trace", spec, "--slo-ms", str(args.slo_ms),
           "--warmup", str(round(50 * args.warmup_s)), "--seed", str(args.seed),
           "--out", str(out)]
    t0 = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = start(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = client.communicate(timeout=args.duration_s + args.warmup_s + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the client, reaped
    except subprocess.TimeoutExpired:
        client.kill()
        raise SystemExit(f"client_floor: the client ran past its bound at {rate:g} req/s"
                         ) from None
    finally:
        srv.terminate()
        srv.wait(10)
    client_cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if client.returncode != 0:
        raise SystemExit(f"client_floor: the client failed ({client.returncode}): {err[-2000:]}")
    rep = json.loads(out.read_text())
    return {"rate": rate, "place": place, "rep": rep, "trace": spec, "requests": rep["requests"],
            "slo_attainment": rep["slo_attainment"], "outcomes": rep["outcomes"],
            "latency_ms_p50": rep["latency_ms_p50"], "latency_ms_p99": rep["latency_ms_p99"],
            "max_send_lag_ms": rep["max_send_lag_ms"], "wall_s": time.monotonic() - t0,
            # the whole client process, warm-up included, per timed request
            "client_cpu_us_per_request": 1e6 * client_cpu_s / max(rep["requests"], 1),
            "timeline": [t["slo_attainment"] for t in rep["timeline"]]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", type=float, nargs="+", default=[500, 1000, 1500, 2000])
    p.add_argument("--places", nargs="+", choices=["cpu1", "cpu0"], default=["cpu1", "cpu0"])
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--duration-s", type=float, default=20.0)
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/client_floor.json"))
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        serve_null(args.serve)
        return 0
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("client_floor: needs CPUs 0 and 1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{'place':6s} {'rate':>6s} {'client':>8s} {'p99 ms':>8s} {'lag ms':>8s} "
          f"{'cli us':>7s}  outcomes",
          flush=True)
    try:
        for rep in range(args.reps):
            for rate in args.rates:
                for place in args.places:
                    r = run_cell(rate, place, rep, args)
                    rows.append(r)
                    print(f"{place:6s} {rate:6.0f} {r['slo_attainment']:8.4f} "
                          f"{r['latency_ms_p99'] or float('nan'):8.1f} "
                          f"{r['max_send_lag_ms']:8.1f} {r['client_cpu_us_per_request']:7.0f}  "
                          f"{json.dumps(r['outcomes'])}",
                          flush=True)
    finally:
        cleanup()
    args.out.write_text(json.dumps({"rows": rows}, indent=1))
    print(f"rows in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
