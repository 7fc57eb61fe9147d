"""CPU per request of the server's own Python path, the same work every run: no sockets, no
client.

The real HTTP protocol class `superserve serve` uses (uvicorn's httptools protocol with the
direct infer route and the slow-client guard), the real router, policy (`--policy`, SlackFit on
the shipped table by default) and metrics, in one uvloop loop; a fake transport in place of the socket and a
no-latency fake pool in place of the worker processes. Each "connection" is fed one KServe v2
JSON request at a time, in waves of `--concurrency` connections, and the process CPU time over
all of them is divided by the requests. What it leaves out: the socket system calls, the pipe
to the worker and the worker itself (the live figure, `calibration_live.py --server-args
--worker-kind noop`, counts them, and is noisier). The work is fixed, but its CPU time still
moves with a shared host's speed: on 2026-12-01 a served JSON request read 120-177 us from
run to run, so compare arms run back to back, and repeat them.

    python benchmarks/frontend_cpu.py [--requests 20000] [--concurrency 8] [--binary]
        [--late [--no-late-at-door]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


class FakeTransport:
    """What uvicorn's protocol asks of a transport; writes are counted, not sent."""

    waiting: list[Any] = []  # [future, responses still due] of the current wave

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: bytes) -> None:
        self.out.append(data)
        if data.startswith(b"HTTP/"):  # a response begins (older versions: body apart)
            w = FakeTransport.waiting
            w[1] -= 1
            if w[1] == 0:
                w[0].set_result(None)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: Any) -> None: ...


def request_bytes(binary: bool, seed: int = 0, slo_ms: float | None = 50.0) -> bytes:
    from open_loop_client import bodies  # the independent client's own JSON bodies

    from superserve.data import load_mnist

    x, _ = load_mnist().test
    img = np.asarray(x[seed:seed + 1], dtype=np.float32).reshape(1, 1, 28, 28)
    if binary:
        raw = img.tobytes()
        head = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28],
                                       "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(raw)}}],
                           **({} if slo_ms is None else {"parameters": {"slo_ms": slo_ms}})
                           }).encode()
        body, extra = head + raw, b"inference-header-content-length: %d\r\n" % len(head)
    else:
        body, extra = bodies(img, slo_ms)[0], b""
    return (b"POST /v2/models/resnet/infer HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n"
            b"content-type: application/json\r\n" + extra
            + b"content-length: %d\r\n\r\n" % len(body) + body)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import uvicorn
    from uvicorn.server import ServerState

    from superserve.runtime.clock import LoopClock
    from superserve.runtime.fake import FakePool
    from superserve.scheduling import make_policy
    from superserve.server.app import start_server
    from superserve.server.components import resolve_table
    from superserve.server.config import ServeConfig

    table, _, _ = resolve_table("resnet", None, check_family=False)
    cfg = ServeConfig(http_port=0, grpc_port=-1, late_at_door=args.late_at_door)
    pool = FakePool(table, LoopClock(), latency_scale=0.0)
    running = await start_server(cfg, table, make_policy(args.policy, table, slo_s=0.05), pool)
    await running.wait_ready(30)
    config: uvicorn.Config = running._uvicorn.config
    state = ServerState()
    # --late: under the default SLO, whose every bit was spent before the bytes were read
    msg = request_bytes(args.binary, slo_ms=None if args.late else 50.0)
    conns = []
    for _ in range(args.concurrency):
        proto = config.http_protocol_class(config=config, server_state=state,
                                           app_state={})
        t = FakeTransport()
        proto.connection_made(t)
        if args.late:  # as if the bytes had waited a second in the socket buffer
            proto._rx_wait = lambda: 1.0
        conns.append((proto, t))

    loop = asyncio.get_running_loop()

    async def wave() -> None:
        done = loop.create_future()
        FakeTransport.waiting = [done, len(conns)]
        for proto, t in conns:
            t.out.clear()
            proto.data_received(msg)
        await done  # every response written
        await asyncio.sleep(0)

    for _ in range(200 // args.concurrency + 1):  # warm-up: calibration, caches
        await wave()
    waves = max(1, args.requests // args.concurrency)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    statuses: dict[bytes, int] = {}
    for _ in range(waves):
        await wave()
        for _, t in conns:
            code = t.out[0][9:12]
            statuses[code] = statuses.get(code, 0) + 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = waves * args.concurrency
    for proto, _ in conns:
        proto.connection_lost(None)
    at_door = running.router.stats.late_at_door  # warm-up included
    await running.stop(drain_timeout_s=1.0)
    return {"requests": n, "protocol": "binary" if args.binary else "json",
            "late": args.late, "late_at_door": args.late_at_door, "refused_at_door": at_door,
            "concurrency": args.concurrency, "cpu_us_per_request": cpu / n * 1e6,
            "wall_us_per_request": wall / n * 1e6,
            "statuses": {k.decode(): v for k, v in statuses.items()}}


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--binary", action="store_true", help="the binary extension, not JSON")
    ap.add_argument("--late", action="store_true",
                    help="requests under the default SLO that arrive already too late (each "
                         "sat 1 s in the socket buffer): the cost of refusing one (504)")
    ap.add_argument("--late-at-door", action=argparse.BooleanOptionalAction, default=True,
                    help="the server's --late-at-door (default on, as `superserve serve`)")
    ap.add_argument("--policy", default="slackfit", help="the router's policy (default slackfit)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        out = uvloop.run(main(args))
    except ImportError:  # pragma: no cover
        out = asyncio.run(main(args))
    if args.json:
        print(json.dumps(out))
    else:
        late = (" late, " + ("refused at the door" if args.late_at_door else
                             "decoded, then refused")) if args.late else ""
        print(f"{out['protocol']}{late}: {out['cpu_us_per_request']:.1f} us of CPU per request "
              f"({out['requests']} requests, {out['concurrency']} at a time; statuses "
              f"{out['statuses']})")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
