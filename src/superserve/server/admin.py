"""Workers added and removed while serving: the admin routes and what they do.

    GET    /v2/admin/workers        the workers kept: id, state, node, pid
    POST   /v2/admin/workers        start more: body {"count": N} (default 1); they join the
                                    router once loaded and warmed up
    DELETE /v2/admin/workers/{id}   drain, then remove: the router sends the worker nothing
                                    more, its batch in flight (if any) completes, then the pool
                                    stops it for good (no restart). Query `timeout_s` (default
                                    30) bounds the drain; past it the worker is removed anyway
                                    and its batch re-queued: a request is never lost.

The same bearer token as the rest of the API guards them (`--auth-token-file`; they are
never among the open health paths). `superserve workers add|remove|list` calls them.
Errors are KServe's `{"error": ...}`: 400 a bad count or timeout, 404 an unknown worker, 409
removing the last ready worker (none would serve), 413 a body over 4 KiB, 501 a pool that
cannot change size (every pool here can: local, Ray and the fake). They are in the OpenAPI
document (server/openapi.py), so the schema fuzz reaches them.

The pools implement the membership calls (runtime/protocol.py `add_worker`, `remove_worker`,
`members`); the router's `retire_worker` is the drain. `/metrics` gets
`superserve_workers_live{node=...}`: workers ready to serve per node.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

__all__ = ["WorkerAdmin", "register_admin"]

MAX_ADD = 64  # workers one call may add
MAX_DRAIN_S = 600.0
MAX_BODY_BYTES = 4096
_DRAIN_POLL_S = 0.005  # a batch lasts milliseconds: poll its end this often


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class WorkerAdmin:
    """Membership changes of one router's pool, on the router's event loop."""

    def __init__(self, router: Any) -> None:
        self.router = router
        self.pool = router.pool
        self.draining: set[int] = set()

    def _members(self) -> dict[int, dict[str, Any]]:
        members = getattr(self.pool, "members", None)
        if members is None:
            raise AdminError(501, f"the worker pool ({type(self.pool).__name__}) does not "
                                  "support adding or removing workers")
        return members()

    def workers(self) -> list[dict[str, Any]]:
        return [{"id": wid, **m, "state": "draining" if wid in self.draining else m["state"]}
                for wid, m in self._members().items()]

    def live_by_node(self) -> dict[str, int]:
        """Workers ready to serve, per node (a draining one no longer counts)."""
        if getattr(self.pool, "members", None) is None:
            return {"local": self.router.ready_workers}
        out: dict[str, int] = {}
        for wid, m in self._members().items():
            if m["state"] == "ready" and wid not in self.draining:
                node = str(m.get("node") or "?")
                out[node] = out.get(node, 0) + 1
        return out

    def add(self, count: int = 1) -> list[int]:
        if not (isinstance(count, int) and not isinstance(count, bool)
                and 1 <= count <= MAX_ADD):
            raise AdminError(400, f"count must be an integer from 1 to {MAX_ADD}, got "
                                  f"{count!r}")
        self._members()  # 501 for a pool without membership calls
        ids = [self.pool.add_worker() for _ in range(count)]
        log.info("admin: added worker(s) %s", ids)
        return ids

    async def remove(self, worker_id: int, timeout_s: float = 30.0) -> bool:
        """Drain `worker_id`, then remove it. Returns whether it drained (False: the timeout
        passed with a batch still in flight, which the pool's removal re-queued)."""
        if not 0 <= timeout_s <= MAX_DRAIN_S:
            raise AdminError(400, f"timeout_s must be from 0 to {MAX_DRAIN_S:g}, got "
                                  f"{timeout_s!r}")
        members = self._members()
        if worker_id not in members:
            raise AdminError(404, f"no worker {worker_id} (workers: {sorted(members)})")
        others = [m for wid, m in members.items()
                  if wid != worker_id and wid not in self.draining]
        if not others or (members[worker_id]["state"] == "ready"
                          and not any(m["state"] == "ready" for m in others)):
            raise AdminError(409, f"worker {worker_id} is the last one ready: removing it "
                                  "would leave none to serve; add one first (and wait until "
                                  "it is ready)")
        self.draining.add(worker_id)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        try:
            # called again each time: a worker that died and rejoined meanwhile is retired
            # again (a batch sent to it before that completes first, like any other)
            while (busy := self.router.retire_worker(worker_id)) and loop.time() < end:
                await asyncio.sleep(_DRAIN_POLL_S)
            self.pool.remove_worker(worker_id)
        finally:
            self.draining.discard(worker_id)
        log.info("admin: removed worker %d (%s)", worker_id,
                 "drained" if not busy else "drain timed out: its batch was re-queued")
        return not busy


async def _small_body(request: Request) -> bytes:
    """The request body, refused (413) past MAX_BODY_BYTES: `{"count": N}` is a few bytes,
    and only the infer path bounds bodies on its own."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise AdminError(413, f"an admin request body is at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(e: AdminError) -> JSONResponse:
    return JSONResponse({"error": str(e)}, status_code=e.status)


def register_admin(app: FastAPI, service: Any, metrics: Any = None) -> WorkerAdmin:
    """Add the admin routes to `app` (before its catch-all route) and the per-node gauge to
    `metrics`."""
    admin = WorkerAdmin(service.router)
    if metrics is not None:
        metrics.track_live_workers(admin.live_by_node)

    @app.get("/v2/admin/workers")
    async def list_workers() -> JSONResponse:
        try:
            return JSONResponse({"workers": admin.workers()})
        except AdminError as e:
            return _error(e)

    @app.post("/v2/admin/workers")
    async def add_workers(request: Request) -> JSONResponse:
        try:
            body = await _small_body(request)
            count: Any = 1
            if body.strip():
                try:
                    doc = json.loads(body)
                except (ValueError, RecursionError):  # RecursionError: nested too deep
                    raise AdminError(400, "body must be JSON: {\"count\": N}") from None
                if not isinstance(doc, dict):
                    raise AdminError(400, "body must be a JSON object: {\"count\": N}")
                count = doc.get("count", 1)
            ids = admin.add(count)
            return JSONResponse({"added": ids, "workers": admin.workers()})
        except AdminError as e:
            return _error(e)

    @app.delete("/v2/admin/workers/{worker_id}")
    async def remove_worker(worker_id: str, timeout_s: str = "30") -> JSONResponse:
        try:
            try:
                wid, timeout = int(worker_id), float(timeout_s)
            except ValueError:
                raise AdminError(400, f"worker id must be an integer and timeout_s a "
                                      f"number, got {worker_id!r} and {timeout_s!r}") from None
            drained = await admin.remove(wid, timeout)
            return JSONResponse({"removed": wid, "drained": drained,
                                 "workers": admin.workers()})
        except AdminError as e:
            return _error(e)

    return admin
