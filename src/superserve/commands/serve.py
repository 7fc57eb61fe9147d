"""`superserve serve`: serve a supernet over KServe v2 REST and gRPC until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
from asyncio import AbstractEventLoop
from collections.abc import Callable

from superserve.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="resnet",
                        help="a family (resnet, vit, ofa_resnet50, ofa_mbv3, pkg.module:factory; "
                             "superserve models) or a checkpoint path (default: resnet)")
    parser.add_argument("--weights", default=None,
                        help="the family's weights: a published OFA checkpoint ({'state_dict': "
                             "...} or bare) or a SuperServe checkpoint (e.g. --model ofa_mbv3 "
                             "--weights W.pth --table T.json)")
    parser.add_argument("--table", default=None,
                        help="ProfileTable JSON (default: the shipped table of the family)")
    parser.add_argument("--policy", default="slackfit",
                        help="slackfit[:buckets=N] | maxacc | maxbatch | clipper:ID|ACC | infaas")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--threads-per-worker", type=int, default=1,
                        help="torch threads per worker (default 1: on a 2-core machine the "
                             "router and the load generator need the other core)")
    parser.add_argument("--warmup-budget-s", type=float, default=30.0,
                        help="seconds each worker may spend warming batch sizes beyond the "
                             "profiled ones before it reports ready (default 30: the shipped "
                             "resnet needs ~7 s on one core; 0: profiled sizes only, a faster "
                             "start whose first batches at other sizes pay 3-7 ms of kernel "
                             "builds)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001, help="-1 disables gRPC")
    parser.add_argument("--slo-ms", type=float, default=50.0,
                        help="SLO of requests that name none (default 50)")
    parser.add_argument("--max-queue", type=int, default=1024,
                        help="images waiting before requests are refused (429)")
    parser.add_argument("--max-body-mb", type=float, default=16.0,
                        help="request payload limit in MiB (413 beyond)")
    parser.add_argument("--max-image-pixels", type=int, default=36_000_000,
                        help="largest encoded image (JPEG/PNG) accepted, width x height read "
                             "from its header before decoding (400 / INVALID_ARGUMENT beyond; "
                             "default 36000000, 6000 x 6000)")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="class names, one per line in output-index order (Triton's "
                             "labels file): classification outputs read <score>:<index>:<label>"
                             " (default: the family's own names, if it has them)")
    parser.add_argument("--overhead-ms", type=float, default=0.0,
                        help="a hand-set per-batch reserve on top of what calibration learns "
                             "(an override; default 0)")
    parser.add_argument("--latency-scale", type=float, default=1.0,
                        help="plan with profiled latencies x this, on top of calibration (an "
                             "override; default 1)")
    parser.add_argument("--calibration-quantile", type=float, default=0.9,
                        help="the per-batch reserve is this quantile of observed - fitted "
                             "batch time (default 0.9; higher plans each batch more safely "
                             "and serves less when batch times have a heavy tail)")
    parser.add_argument("--calibration-tail", default="constant", choices=["constant", "linear"],
                        help="the per-batch reserve calibration plans with: one constant (a "
                             "high quantile of observed - fit; default) or a line in the "
                             "batch's profiled latency (small and large batches apart)")
    parser.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                        help="plan with the table as profiled (plus the overrides) instead of "
                             "learning what batches really cost on this machine")
    parser.add_argument("--no-miss-feedback", dest="miss_feedback", action="store_false",
                        help="keep SlackFit's rate-guard headroom fixed instead of raising it "
                             "while requests miss their SLO (docs/scheduling.md)")
    parser.add_argument("--batch-wait-ms", type=float, default=None,
                        help="an idle worker holds its next batch up to this long after the "
                             "head request arrived (at most 5%% of its SLO), only while the "
                             "arrival rate says more requests are due: fuller batches, less "
                             "CPU per request (default 2; 0: never)")
    parser.add_argument("--batch-log", default=None, metavar="CSV",
                        help="write one line per finished batch (time, worker, subnet, batch, "
                             "profiled / planned / observed / compute ms, head slack, late "
                             "requests, the policy rule that planned it) to this CSV, for "
                             "studying the calibration offline")
    parser.add_argument("--worker-cpus", default=None,
                        help="CPU ids or ranges (1,2,4-7; Linux): worker i is pinned to the "
                             "i-th group of --threads-per-worker CPUs of the list (wrapping), "
                             "e.g. 1 keeps CPU 0 for the router and clients")
    parser.add_argument("--drain-timeout-s", type=float, default=10.0,
                        help="on SIGTERM, how long queued requests may still finish")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: every visible GPU in turn when CUDA is present, else the "
                             "CPU (default); overridden by --devices")
    parser.add_argument("--devices", default=None,
                        help="comma list of devices (cpu, cuda, cuda:N): worker i uses the "
                             "(i mod n)-th, e.g. cuda:0,cuda:1")
    parser.add_argument("--worker-kind", default="torch", choices=["torch", "profile", "noop"],
                        help="torch: run the supernet; profile: sleep the profiled latency; "
                             "noop: return at once (benchmarks and tests without a model)")
    parser.add_argument("--backend", default="local", choices=["local", "ray"],
                        help="local: worker processes here (default); ray: workers as Ray "
                             "actors, placed across the cluster's nodes (docs/ray.md)")
    parser.add_argument("--ray-address", default=None,
                        help="ray: the cluster to join (auto, host:port, ray://host:10001); "
                             "default: start a local Ray on 127.0.0.1 and stop it on exit")
    parser.add_argument("--ray-cpus-per-worker", type=float, default=1.0,
                        help="ray: logical CPUs each worker actor reserves (default 1)")
    parser.add_argument("--worker-gpus", type=float, default=0.0,
                        help="ray: GPUs each worker actor reserves (default 0)")
    parser.add_argument("--ray-max-restarts", type=int, default=3,
                        help="ray: restarts of a dead worker actor before it stays gone")
    parser.add_argument("--auth-token-file", default=None,
                        help="bearer tokens, one a line: every request (HTTP Authorization "
                             "header, gRPC metadata) must carry one")
    parser.add_argument("--auth-open-health", action="store_true",
                        help="with --auth-token-file: health endpoints and /metrics need no "
                             "token (probes, scrapers)")
    parser.add_argument("--tls-cert", default=None, help="PEM certificate: HTTPS and gRPC TLS")
    parser.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    parser.add_argument("--insecure", action="store_true",
                        help="allow binding a non-loopback --host without --auth-token-file")
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                        help="event loop of the router and front ends: uvloop (libuv; less "
                             "CPU per request) or the stdlib's; auto: uvloop when installed")
    parser.add_argument("--request-read-timeout-s", type=float, default=30.0,
                        help="a request's headers and body must arrive within it, else 408 "
                             "and the connection is closed (slow clients; default 30)")
    parser.add_argument("--socket-wait", action=argparse.BooleanOptionalAction, default=True,
                        help="start an HTTP request's clock when its bytes reached the "
                             "kernel's socket buffer (Linux TCP_INFO), not when the busy loop "
                             "read them (default on)")
    parser.add_argument("--late-at-door", action=argparse.BooleanOptionalAction, default=True,
                        help="answer 504 at once, before decoding its body, to an HTTP request "
                             "under the default SLO that is already too late for the fastest "
                             "subnet when its last byte is read (a front end behind on its "
                             "core spends no CPU on answers nobody can use; default on)")
    parser.add_argument("--keep-alive-timeout-s", type=float, default=30.0,
                        help="an idle keep-alive HTTP connection is closed after this many "
                             "seconds (default 30; keep it above a load balancer's idle "
                             "timeout)")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from superserve.runtime.devices import parse_devices
    from superserve.server.app import build_and_serve
    from superserve.server.config import ServeConfig

    if args.max_body_mb <= 0:
        raise ConfigError(f"--max-body-mb must be > 0, got {args.max_body_mb}")
    if args.batch_wait_ms is not None and not 0 <= args.batch_wait_ms < 1e6:  # nan: refused
        raise ConfigError(f"--batch-wait-ms must be >= 0 (0: never hold), got "
                          f"{args.batch_wait_ms}")
    if args.worker_cpus is not None:
        _pin_workers(args.worker_cpus)
    cfg = ServeConfig(model=args.model, weights=args.weights or "", table=args.table,
                      policy=args.policy,
                      workers=args.workers, threads_per_worker=args.threads_per_worker,
                      host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
                      default_slo_s=args.slo_ms / 1e3, max_queue=args.max_queue,
                      max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                      max_image_pixels=args.max_image_pixels, labels_file=args.labels,
                      overhead_s=args.overhead_ms / 1e3, latency_scale=args.latency_scale,
                      calibrate=args.calibrate, calibration_tail=args.calibration_tail,
                      calibration_quantile=args.calibration_quantile,
                      batch_log=args.batch_log, miss_feedback=args.miss_feedback,
                      **({} if args.batch_wait_ms is None
                         else {"batch_wait_s": args.batch_wait_ms / 1e3}),
                      drain_timeout_s=args.drain_timeout_s,
                      warmup_budget_s=args.warmup_budget_s,
                      device=args.device, worker_kind=args.worker_kind,
                      devices=parse_devices(args.devices) if args.devices else (),
                      backend=args.backend, ray_address=args.ray_address,
                      ray_cpus_per_worker=args.ray_cpus_per_worker,
                      worker_gpus=args.worker_gpus, ray_max_restarts=args.ray_max_restarts,
                      auth_token_file=args.auth_token_file,
                      auth_open_health=args.auth_open_health, tls_cert=args.tls_cert,
                      tls_key=args.tls_key, insecure=args.insecure,
                      request_read_timeout_s=args.request_read_timeout_s,
                      keep_alive_timeout_s=args.keep_alive_timeout_s,
                      socket_wait=args.socket_wait, late_at_door=args.late_at_door)

    def ready(running) -> None:
        grpc = f", grpc {cfg.host}:{running.grpc_port}" if running.grpc_port >= 0 else ""
        print(f"superserve: serving {running.service.model!r} on "
              f"{'https' if cfg.tls_cert else 'http'}://{cfg.host}:{running.http_port}{grpc} "
              f"(policy {cfg.policy}, "
              f"{cfg.workers} worker(s)); Ctrl-C or SIGTERM to stop", flush=True)

    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        return runner.run(build_and_serve(cfg, on_ready=ready))


def _loop_factory(kind: str) -> Callable[[], AbstractEventLoop] | None:
    """uvloop's loop factory, or None (the stdlib's loop)."""
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ConfigError("--loop uvloop: uvloop is not installed "
                              "(pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def _pin_workers(spec: str) -> None:
    """Workers are spawned processes: they read the CPU list from the environment and take
    their group of it (runtime/devices.worker_cpus)."""
    import os

    from superserve.runtime.devices import parse_cpu_list

    if not hasattr(os, "sched_setaffinity"):
        raise ConfigError("--worker-cpus needs Linux (sched_setaffinity)")
    ids = parse_cpu_list(spec)
    n = os.cpu_count() or 1
    bad = [c for c in ids if not 0 <= c < n]
    if bad:
        raise ConfigError(f"--worker-cpus names CPUs {bad}; this machine has 0..{n - 1}")
    os.environ["SUPERSERVE_WORKER_CPUS"] = ",".join(map(str, ids))
