"""Off-loop work: the one seam through which the front end runs CPU-heavy steps (decoding a
large body or an image, encoding a large response, rendering /metrics) without stalling the
event loop that every other request is waiting on.

Small work stays inline (a thread hop costs ~20-50 us, more than decoding a small body);
`should_offload(nbytes)` is the rule, `run_blocking(fn, *args)` the mechanism: a bounded
thread pool (json/orjson, Pillow and simplejpeg release or mostly avoid the GIL on the heavy
parts; what does not release it still lets the loop run between bytecode slices).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import threading
from typing import Any, Callable, TypeVar

__all__ = ["OFFLOAD_MIN_BYTES", "run_blocking", "should_offload", "shutdown"]

T = TypeVar("T")

# bodies below this decode inline: at ~1 GB/s orjson, 256 KiB is ~0.25 ms of loop time
OFFLOAD_MIN_BYTES = 256 * 1024

_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            workers = max(2, min(8, os.cpu_count() or 2))
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="superserve-offload")
        return _pool


def should_offload(nbytes: int) -> bool:
    """Whether work over `nbytes` of input is worth a thread hop."""
    return nbytes >= OFFLOAD_MIN_BYTES


async def run_blocking(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn(*args, **kwargs)` on the off-loop pool; exceptions propagate to the caller."""
    loop = asyncio.get_running_loop()
    call = functools.partial(fn, *args, **kwargs) if kwargs else functools.partial(fn, *args)
    return await loop.run_in_executor(_executor(), call)


def shutdown() -> None:
    """Stop the pool (tests, server exit); a later call starts a new one."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)
