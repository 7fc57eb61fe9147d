"""LocalProcessPool: N worker processes ('spawn'), each on a duplex Pipe that the event loop
watches with `add_reader` (no polling thread, no busy wait).

Death is noticed two ways, whichever comes first: the pipe reads EOF (the child's end closed
with the process), or the process sentinel becomes readable. Both are loop callbacks, so a
`kill -9` is seen within milliseconds. The pool then tells the router (`worker_lost`) and
starts a new process in its place; a worker that dies before ever becoming ready is retried
with growing back-off, up to `max_start_failures` times in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superserve.runtime import shm
from superserve.runtime.protocol import BatchTask, PoolListener
from superserve.runtime.worker import WorkerConfig, worker_main

log = logging.getLogger(__name__)

__all__ = ["TRANSPORTS", "LocalProcessPool"]

# shm: batches in shared-memory slabs, descriptors on the pipe (default);
# pipe: everything pickled through the pipe (the fallback, and the benchmark's baseline)
TRANSPORTS = ("shm", "pipe")

_GROUP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _group_signals_ignored_by_children() -> Iterator[None]:
    """While a worker is spawned: SIG_IGN survives exec (a signal mask does not, measured),
    and Python keeps an inherited SIG_IGN for SIGINT, so a Ctrl-C that reaches the process
    group while the worker imports cannot kill it before worker_main ignores it too. Here the
    signals are blocked meanwhile (Linux keeps a blocked signal pending whatever its
    disposition), so the router still gets one that arrives in the window. Main thread only
    (signal.signal's rule); elsewhere (tests) a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _GROUP_SIGNALS)
    old = {sig: signal.getsignal(sig) for sig in _GROUP_SIGNALS}
    try:
        for sig, h in old.items():
            if h is not None:  # None: set outside Python, cannot be restored
                signal.signal(sig, signal.SIG_IGN)
        yield
    finally:
        for sig, h in old.items():
            if h is not None:
                signal.signal(sig, h)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


_FRAME = 4  # multiprocessing.Connection's framing: a signed big-endian length, then pickle
_READ = 1 << 16


@dataclass
class _Slot:
    process: Any
    conn: Any
    sock: Any = None  # a socket on a dup of the pipe's fd (a socketpair): non-blocking reads
    rbuf: bytearray = field(default_factory=bytearray)  # bytes read, not yet a whole message
    ready: bool = False
    gone: bool = False
    info: dict[str, Any] | None = None
    tx: shm.Slab | None = None  # input batches, router -> worker
    rx: shm.Slab | None = None  # logits, worker -> router
    rx_need: int = 0  # bytes the last inline reply needed: grow rx before the next batch
    unmapped: list[shm.Slab] = field(default_factory=list)  # names to unlink after a reply

    def unlink_all(self) -> None:
        for slab in (self.tx, self.rx, *self.unmapped):
            if slab is not None:
                slab.unlink()
        self.unmapped.clear()


def _send(conn: Any, msg: Any) -> None:
    """`conn.send(msg)` in multiprocessing's framing (the worker reads it with `recv`), without
    its per-call ForkingPickler: one pickle and, for a descriptor, one write."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    n = len(data)
    head = n.to_bytes(4, "big", signed=True) if n <= 0x7FFFFFFF else \
        (-1).to_bytes(4, "big", signed=True) + n.to_bytes(8, "big")
    if n <= 16384:
        _write_all(conn.fileno(), head + data)
    else:  # no copy of a large (inline) batch
        _write_all(conn.fileno(), head)
        _write_all(conn.fileno(), data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _recv_nowait(sock: socket.socket) -> bytes | None:
    """What the socket holds now (b"" at EOF), None when nothing is there."""
    try:
        return sock.recv(_READ, socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return None


class LocalProcessPool:
    def __init__(self, config: WorkerConfig, n_workers: int = 1, restart: bool = True,
                 max_start_failures: int = 3, transport: str = "shm") -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
        self.config = config
        self.transport = transport
        self.n_workers = n_workers
        self.restart = restart
        self.max_start_failures = max_start_failures
        self._ctx = mp.get_context("spawn")
        self._slots: dict[int, _Slot] = {}
        self._start_failures: dict[int, int] = {}
        self._listener: PoolListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.restarts = 0
        self.fatal: dict[int, str] = {}  # worker id -> why it could not start
        self._removed: set[int] = set()  # ids taken out by the operator: never restarted
        # crash-loop back-off of workers that did become ready: each death within
        # `crash_window_s` of the previous one doubles the wait before the restart
        self.crash_window_s = 30.0
        self.max_backoff_s = 10.0
        self._last_death: dict[int, float] = {}
        self._crash_streak: dict[int, int] = {}
        self.last_backoff_s = 0.0  # the most recent restart delay (tests, logs)

    # ------------------------------------------------------------------ lifecycle
    def start(self, listener: PoolListener) -> None:
        self._listener = listener
        self._loop = asyncio.get_running_loop()
        for wid in range(self.n_workers):
            self._spawn(wid)

    def _spawn(self, wid: int) -> None:
        if self._closing or wid in self._removed:
            return
        parent, child = self._ctx.Pipe(duplex=True)
        p = self._ctx.Process(target=worker_main, args=(child, self.config, wid, os.getpid()),
                              name=f"superserve-worker-{wid}", daemon=True)
        with _group_signals_ignored_by_children():
            p.start()
        child.close()  # only the child holds its end now: its death reads as EOF here
        # Pipe(duplex=True) is a socketpair on Unix: read it as a socket, without blocking
        slot = _Slot(p, parent, sock=socket.socket(fileno=os.dup(parent.fileno())))
        self._slots[wid] = slot
        assert self._loop is not None
        self._loop.add_reader(parent.fileno(), self._on_readable, wid, slot)
        self._loop.add_reader(p.sentinel, self._on_exit, wid, slot)
        log.info("worker %d starting (pid %d, %s)", wid, p.pid, self.config.kind)

    def alive(self) -> int:
        return sum(1 for s in self._slots.values() if s.ready and not s.gone)

    def pid(self, wid: int) -> int:
        return self._slots[wid].process.pid

    def info(self, wid: int) -> dict[str, Any] | None:
        return self._slots[wid].info

    def kill(self, wid: int) -> None:
        """SIGKILL a worker (fault-injection in tests and experiments)."""
        os.kill(self.pid(wid), signal.SIGKILL)

    async def close(self, timeout_s: float = 5.0) -> None:
        self._closing = True
        for slot in self._slots.values():
            if not slot.gone:
                try:
                    slot.conn.send(("stop",))
                except (OSError, ValueError):
                    pass
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        for wid, slot in list(self._slots.items()):
            while slot.process.is_alive() and loop.time() < end:
                await asyncio.sleep(0.01)
            if slot.process.is_alive():
                slot.process.kill()
            slot.process.join(1.0)
            self._forget(slot)
        self._slots.clear()

    # ------------------------------------------------------------------ data path
    def submit(self, worker_id: int, task: BatchTask) -> None:
        slot = self._slots[worker_id]
        try:
            if self.transport == "shm":
                _send(slot.conn, self._stage(slot, task))
            else:
                _send(slot.conn, task.message())
        except (OSError, ValueError) as e:  # broken pipe: it died under us
            self._lost(worker_id, slot, f"send failed: {e}")

    def _stage(self, slot: _Slot, task: BatchTask) -> tuple[Any, ...]:
        """Copy the batch into the worker's input slab (growing the slabs first when they are
        too small: the worker maps the new ones before it reads the batch, the pipe keeps
        the order) and return the descriptor that goes over the pipe. The pipe write is a
        few dozen bytes, so it never waits for the worker to read."""
        images = np.ascontiguousarray(task.images, dtype=np.float32)
        if slot.tx is None or not slot.tx.fits(images.nbytes):
            self._remap(slot, "in", images.nbytes)
        if slot.rx is None or not slot.rx.fits(slot.rx_need):
            # enough for 1,000 classes of this batch: one slab serves every family we know
            self._remap(slot, "out", max(slot.rx_need, 4000 * max(len(images), 32)))
        assert slot.tx is not None
        np.copyto(slot.tx.view(images.shape), images, casting="no")
        return ("run", task.batch_id, task.subnet, images.shape, task.load_s)

    def _remap(self, slot: _Slot, which: str, need: int) -> None:
        old = slot.tx if which == "in" else slot.rx
        slab = shm.create(shm.grown_size(need, old.nbytes if old else 0), which)
        if which == "in":
            slot.tx = slab
        else:
            slot.rx = slab
        slot.unmapped.append(slab)  # unlinked once the worker has replied after mapping it
        _send(slot.conn, ("map", which, slab.path, slab.nbytes))

    def poll(self) -> None:
        """Read what the workers have written so far, now, as their reader callbacks would
        (the router calls this between requests: in a loop iteration busy with hundreds of
        requests, those callbacks run only when it ends)."""
        for wid, slot in list(self._slots.items()):
            if not slot.gone:
                self._on_readable(wid, slot)

    def _on_readable(self, wid: int, slot: _Slot) -> None:
        """Everything the worker has written so far, in one or a few reads (not a poll and
        two reads per message), split into its messages."""
        if slot.gone:
            return
        buf = slot.rbuf
        try:
            while True:
                data = _recv_nowait(slot.sock)
                if data is None:
                    break
                if not data:
                    raise EOFError
                buf += data
                if len(data) < _READ:
                    break
            while len(buf) >= _FRAME:
                n = int.from_bytes(buf[:_FRAME], "big", signed=True)
                head = _FRAME
                if n == -1:  # multiprocessing's form of a message over 2 GiB
                    if len(buf) < _FRAME + 8:
                        break
                    n, head = int.from_bytes(buf[_FRAME:_FRAME + 8], "big"), _FRAME + 8
                if len(buf) < head + n:
                    break
                msg = pickle.loads(bytes(buf[head:head + n]))
                del buf[:head + n]
                self._handle(wid, slot, msg)
                if slot.gone:
                    return
        except (EOFError, OSError) as e:
            self._lost(wid, slot, f"pipe closed ({type(e).__name__})")

    def _handle(self, wid: int, slot: _Slot, msg: tuple[Any, ...]) -> None:
        assert self._listener is not None
        kind = msg[0]
        if slot.unmapped and kind in ("done", "error"):
            for slab in slot.unmapped:  # mapped by the worker before it replied
                slab.unlink()
            slot.unmapped.clear()
        if kind == "done":
            logits = msg[2]
            if isinstance(logits, tuple):  # its logits wait in the output slab
                assert slot.rx is not None
                logits = slot.rx.view(logits).copy()
            else:
                slot.rx_need = logits.nbytes
            self._listener.batch_done(wid, msg[1], logits, msg[3])
        elif kind == "error":
            self._listener.batch_failed(wid, msg[1], msg[2])
        elif kind == "ready":
            slot.ready, slot.info = True, msg[1]
            self._start_failures[wid] = 0
            log.info("worker %d ready: %s", wid, msg[1])
            self._listener.worker_ready(wid)
        elif kind == "fatal":
            self.fatal[wid] = msg[1]
            log.error("worker %d could not start: %s", wid, msg[1])
        else:
            log.error("worker %d sent an unknown message %r", wid, kind)

    def _on_exit(self, wid: int, slot: _Slot) -> None:
        if not slot.gone:
            # Results the worker sent before exiting are still in the pipe: deliver them.
            self._on_readable(wid, slot)
        if not slot.gone:
            self._lost(wid, slot, f"process exited (code {slot.process.exitcode})")

    def _forget(self, slot: _Slot) -> None:
        if slot.gone:
            return
        slot.gone = True
        slot.unlink_all()
        assert self._loop is not None
        for fd in (slot.conn.fileno(), slot.process.sentinel):
            try:
                self._loop.remove_reader(fd)
            except (ValueError, OSError):
                pass
        slot.sock.close()
        slot.conn.close()

    def _lost(self, wid: int, slot: _Slot, reason: str) -> None:
        was_ready = slot.ready
        self._forget(slot)
        if self._closing:
            return
        slot.process.join(0.5)
        log.warning("worker %d (pid %s) lost: %s", wid, slot.process.pid, reason)
        assert self._listener is not None
        self._listener.worker_lost(wid, reason)
        if not self.restart:
            return
        fails = 0 if was_ready else self._start_failures.get(wid, 0) + 1
        self._start_failures[wid] = fails
        if fails > self.max_start_failures:
            log.error("worker %d failed to start %d times in a row; not restarting it (%s)",
                      wid, fails, self.fatal.get(wid, reason))
            return
        assert self._loop is not None
        now = self._loop.time()
        last = self._last_death.get(wid)
        streak = self._crash_streak.get(wid, 0) + 1 \
            if last is not None and now - last < self.crash_window_s else 0
        self._last_death[wid], self._crash_streak[wid] = now, streak
        delay = min(self.max_backoff_s, max(0.1 * (2 ** fails - 1),
                                            0.0 if streak == 0 else 0.1 * 2 ** streak))
        self.last_backoff_s = delay
        self.restarts += 1
        log.warning("restarting worker %d in %.2f s (%s; %d quick deaths in a row, %d "
                    "restarts so far)", wid, delay, reason, streak, self.restarts)
        self._loop.call_later(delay, self._spawn, wid)

    # ------------------------------------------------------------------ membership
    def add_worker(self) -> int:
        """One more worker process while serving; it joins through `worker_ready`."""
        wid = max(self._slots, default=-1) + 1  # removed ids keep their slot: never reused
        self._spawn(wid)
        self.n_workers = len(self.members())
        return wid

    def remove_worker(self, worker_id: int) -> None:
        """Stop a worker for good while serving (no restart). The router hears `worker_lost`,
        so a batch still in flight is re-queued; the admin call drains it first (server/
        admin.py), so there is none."""
        slot = self._slots[worker_id]
        if worker_id in self._removed:
            return
        self._removed.add(worker_id)
        if not slot.gone:
            try:
                slot.conn.send(("stop",))
            except (OSError, ValueError):
                pass
            self._forget(slot)
        self.n_workers = len(self.members())
        if self._closing:
            return
        log.info("worker %d (pid %s) removed by the operator", worker_id, slot.process.pid)
        assert self._listener is not None and self._loop is not None
        self._listener.worker_lost(worker_id, "removed by the operator")
        self._loop.call_later(5.0, self._reap, slot.process)

    @staticmethod
    def _reap(process: Any) -> None:
        if process.is_alive():  # told to stop 5 s ago
            process.kill()
        process.join(0.5)

    def members(self) -> dict[int, dict[str, Any]]:
        return {wid: {"state": "ready" if s.ready and not s.gone else "starting",
                      "node": "local", "pid": s.process.pid}
                for wid, s in sorted(self._slots.items()) if wid not in self._removed}
