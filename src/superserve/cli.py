"""`superserve ...`: the command-line entry point.

Each subcommand lives in `superserve.commands.<name>` and exposes
`add_arguments(parser)` and `run(args) -> int`. Command modules import heavy packages
(torch, uvicorn, matplotlib) inside `run`, so `superserve trace ...` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading

# name -> one-line help. The module superserve.commands.<name> implements it.
COMMANDS: dict[str, str] = {
    "train": "train a supernet family on MNIST-5k (sandwich rule, in-place distillation)",
    "models": "list the shipped supernets with their accuracy and latency",
    "profile": "search the Pareto subnets and profile them into a ProfileTable; `profile show`",
    "trace": "generate, save and inspect request traces (`trace show SPEC`)",
    "simulate": "replay a trace against a policy in the discrete-event simulator",
    "experiment": "run one of the paper's experiments (simulated or live) to CSV + PNG",
    "bench": "micro-benchmarks: subnetact, scheduler, router",
    "serve": "serve a supernet over KServe v2 HTTP and gRPC",
    "loadgen": "open-loop load generator against a running server",
    "workers": "list, add and remove a running server's workers while it serves",
    "demo": "the main job: serve the default model under a bursty trace vs the baselines",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superserve", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        try:
            module = importlib.import_module(f"superserve.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"superserve.commands.{name}":
                raise
            continue  # not built yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Before torch loads: OpenMP threads sleep instead of spinning while they wait. On a
    # 2-core machine shared with a router, a load generator or another job, spinning
    # threads slow multi-threaded torch down by an order of magnitude.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from superserve.errors import SuperServeError

    try:
        if args.command != "serve" and threading.current_thread() is threading.main_thread():
            # SIGTERM unwinds like Ctrl-C, so the servers a demo, experiment or benchmark
            # started (each in its own session, out of reach of the terminal's signals) are
            # stopped by their context managers instead of being left running. (`serve` has
            # its own handler: drain, then exit.) Installed inside the try: a SIGTERM the
            # moment it is in place still exits with 143.
            signal.signal(signal.SIGTERM, _terminate)
        return int(args._module.run(args) or 0)
    except SuperServeError as e:
        print(f"superserve {args.command}: error: {e}", file=sys.stderr)
        return 2
    except _Terminated:
        return 143
    except KeyboardInterrupt:
        return 130


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: unwinds (context managers stop their servers)."""


# How long the orderly unwinding after SIGTERM may take (a server's own stop allows 30 s
# after its drain) before the servers this command started are killed and it exits anyway.
TERMINATE_GRACE_S = 45.0
_watchdog: threading.Timer | None = None


def _terminate(signum: int, frame: object) -> None:
    global _watchdog
    if _watchdog is None:
        _watchdog = threading.Timer(TERMINATE_GRACE_S, _force_exit)
        _watchdog.daemon = True
        _watchdog.start()
    raise _Terminated(f"signal {signum}")


def _force_exit() -> None:
    """The unwinding hung: kill the servers this command started (never leave them running),
    then exit with SIGTERM's status."""
    from superserve.bench.server_proc import kill_all

    n = kill_all()
    print(f"superserve: still not stopped {TERMINATE_GRACE_S:.0f} s after SIGTERM; killed "
          f"{n} server(s) and exiting", file=sys.stderr, flush=True)
    os._exit(143)


if __name__ == "__main__":
    sys.exit(main())
