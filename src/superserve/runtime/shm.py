"""Shared-memory slabs between the router and a worker process: batches cross as bytes in a
mapping both processes hold, and only small descriptors travel over the control pipe.

A `Slab` is a file in /dev/shm (a tmpfs: RAM, never disk) mapped by both sides. The router
creates it and tells the worker its path; the worker maps it and closes its descriptor; once
the worker has used it (its next reply), the router unlinks the path, so the memory lives only
as long as the two mappings and nothing is left behind when either process dies. (A router
killed in that short window leaves one file; `superserve-*` in /dev/shm is ours.)

Why not `multiprocessing.shared_memory`: on Python < 3.13 every attach registers the segment
with the resource tracker, which then unlinks it (or warns of a leak) when the attaching
process exits, under the creator's feet. A plain mapped file has none of that.

One batch is in flight per worker (runtime/protocol.py), so one input slab and one output
slab per worker suffice: the router writes a batch, the worker reads it and writes its
logits, the router copies them out before it sends the next batch.
"""

from __future__ import annotations

import itertools
import mmap
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Slab", "attach", "create", "grown_size"]

_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
_ids = itertools.count()
_PAGE = mmap.PAGESIZE


@dataclass(eq=False)
class Slab:
    """One mapping of `nbytes` bytes; `path` is empty once unlinked."""

    path: str
    nbytes: int
    _map: mmap.mmap = field(repr=False)

    def view(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
        """An array over the first bytes of the slab (no copy)."""
        return np.ndarray(shape, dtype=dtype, buffer=self._map)

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.nbytes

    def unlink(self) -> None:
        """Remove the name; the memory stays until every mapping of it is gone."""
        if self.path:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            self.path = ""


def grown_size(need: int, current: int = 0) -> int:
    """A new slab's size for `need` bytes: at least double the current one (so a growing
    batch remaps O(log n) times), rounded up to whole pages."""
    size = max(need, 2 * current, _PAGE)
    return -(-size // _PAGE) * _PAGE


def create(nbytes: int, tag: str) -> Slab:
    """A new slab owned by the caller (the router), zero-filled by the kernel."""
    nbytes = grown_size(nbytes)
    path = os.path.join(_SHM_DIR, f"superserve-{os.getpid()}-{next(_ids)}-{tag}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, nbytes)
        mapping = mmap.mmap(fd, nbytes)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return Slab(path, nbytes, mapping)


def attach(path: str, nbytes: int) -> Slab:
    """Map a slab the other side created (the worker); raises OSError if it is gone."""
    fd = os.open(path, os.O_RDWR)
    try:
        mapping = mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)
    return Slab("", nbytes, mapping)  # the creator owns the name
