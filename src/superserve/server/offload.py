"""Off-loop work: the one seam through which the front end runs CPU-heavy steps (decoding a
large body or an image, encoding a large response, rendering /metrics) without stalling the
event loop that every other request is waiting on.

Small work stays inline (a thread hop costs ~20-50 us, more than decoding a small body);
`should_offload(nbytes)` is the rule. Two mechanisms, because the GIL decides what helps:

- `run_blocking(fn, *args)`: a bounded thread pool, for work that releases the GIL (zlib,
  numpy on large arrays, Pillow) or that is pure Python and short (the loop still gets the
  GIL every `sys.getswitchinterval()`, 5 ms).
- `run_cpu(fn, *args)`: a small pool of processes, for work that holds the GIL for long
  (orjson and the stdlib JSON decoder parse a body in one C call: in a thread, a 16 MiB body
  holds the loop for the whole parse). Arguments and result are pickled (bytes and float32
  arrays: memcpy speed), and the pipes are fed and read by the executor's own threads, so the
  loop pays only a wake-up. The processes start on first use and ignore SIGINT/SIGTERM to the
  process group (the router owns shutdown); they leave when the router dies.

`SUPERSERVE_OFFLOAD` (read once, at import) sets the mode: `process` (default: both pools),
`thread` (`run_cpu` uses threads too) or `off` (`should_offload` is always False: everything
inline, the "before" of benchmarks/loop_lag.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing as mp
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["MODE", "OFFLOAD_MIN_BYTES", "run_blocking", "run_cpu", "should_offload",
           "shutdown"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# bodies below this decode inline: at ~1 GB/s orjson, 256 KiB is ~0.25 ms of loop time
OFFLOAD_MIN_BYTES = 256 * 1024

MODE = os.environ.get("SUPERSERVE_OFFLOAD", "process").strip().lower()
if MODE not in ("process", "thread", "off"):
    log.warning("SUPERSERVE_OFFLOAD=%r is not process, thread or off; using process", MODE)
    MODE = "process"

_PROCESSES = max(1, min(4, (os.cpu_count() or 2) // 2))  # decode processes
_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_procs: concurrent.futures.ProcessPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            workers = max(2, min(8, os.cpu_count() or 2))
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="superserve-offload")
        return _pool


def _child_init(parent_pid: int) -> None:
    """In each decode process: ignore the group's Ctrl-C/SIGTERM, leave when the parent dies,
    and yield the CPU to the router (a large body can wait; the loop serving every other
    request should not: measured, a 16 MiB JSON body costs ~1 s of CPU to decode)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:
        os.nice(5)
    except OSError:
        pass

    def watch() -> None:
        import time

        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _processes() -> concurrent.futures.ProcessPoolExecutor:
    global _procs
    with _lock:
        if _procs is None:
            _procs = concurrent.futures.ProcessPoolExecutor(
                max_workers=_PROCESSES, mp_context=mp.get_context("spawn"),
                initializer=_child_init, initargs=(os.getpid(),))
        return _procs


def _pid(_: int) -> int:
    return os.getpid()


def _start_processes() -> concurrent.futures.ProcessPoolExecutor:
    pool = _processes()
    list(pool.map(_pid, range(_PROCESSES)))  # spawn them all now, off the loop
    return pool


def should_offload(nbytes: int) -> bool:
    """Whether work over `nbytes` of input is worth a thread (or process) hop."""
    return MODE != "off" and nbytes >= OFFLOAD_MIN_BYTES


async def run_blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` on the off-loop thread pool; exceptions propagate."""
    loop = asyncio.get_running_loop()
    call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
    return await loop.run_in_executor(_executor(), call)


async def run_cpu(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` (a module-level function; picklable arguments and result) in a decode
    process, for work that holds the GIL; exceptions propagate (SuperServeErrors pickle).
    In `thread` mode, or if the process pool broke (a decode process was killed), it runs on
    the thread pool instead."""
    global _procs
    if MODE != "process":
        return await run_blocking(fn, *args)
    loop = asyncio.get_running_loop()
    pool = _procs
    if pool is None:  # the first use spawns the processes: on a thread, not on the loop
        pool = await run_blocking(_start_processes)
    try:
        return await loop.run_in_executor(pool, fn, *args)
    except concurrent.futures.process.BrokenProcessPool as e:
        log.warning("the decode process pool broke (%s); starting a new one", e)
        with _lock:
            if _procs is pool:
                _procs = None
        pool.shutdown(wait=False, cancel_futures=True)
        return await run_blocking(fn, *args)


def shutdown() -> None:
    """Stop both pools (tests, server exit); a later call starts new ones."""
    global _pool, _procs
    with _lock:
        pool, _pool = _pool, None
        procs, _procs = _procs, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
    if procs is not None:
        procs.shutdown(wait=False, cancel_futures=True)
