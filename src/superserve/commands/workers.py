"""`superserve workers list|add|remove`: change a running server's workers while it serves.

    superserve workers list   [--url URL] [--auth-token-file F] [--cacert CA] [--json]
    superserve workers add    [N] [--wait] [--timeout S]
    superserve workers remove ID [--drain-timeout S]

Calls the server's admin routes (server/admin.py). `remove` drains first: the worker gets no
new batch, finishes the one it has, then stops for good. With `--auth-token-file F` (or
SUPERSERVE_AUTH_TOKEN in the environment) the first token of F is sent as a bearer token.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from superserve.errors import ConfigError, SuperServeError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8000",
                   help="the server's REST address (default %(default)s)")
    p.add_argument("--auth-token-file", default=None,
                   help="bearer token file of the server (its first token is sent)")
    p.add_argument("--cacert", default=None,
                   help="CA certificate to verify an https:// server with (its --tls-cert "
                        "when self-signed)")
    p.add_argument("--json", action="store_true", help="print the server's JSON answer")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", help="the workers kept: id, state, node, pid")
    a = sub.add_parser("add", help="start N more workers (default 1)")
    a.add_argument("count", type=int, nargs="?", default=1)
    a.add_argument("--wait", action="store_true", help="until the new workers are ready")
    a.add_argument("--timeout", type=float, default=300.0,
                   help="seconds --wait waits at most (default %(default)s)")
    r = sub.add_parser("remove", help="drain worker ID, then stop it for good")
    r.add_argument("worker_id", type=int)
    r.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds its batch in flight may take; past them it is re-queued "
                        "(default %(default)s)")


def _headers(args: argparse.Namespace) -> dict[str, str]:
    token = os.environ.get("SUPERSERVE_AUTH_TOKEN")
    if args.auth_token_file:
        from superserve.server.auth import load_tokens

        token = load_tokens(args.auth_token_file)[0].decode()
    return {"authorization": f"Bearer {token}"} if token else {}


def _call(client: Any, method: str, path: str, **kw: Any) -> dict[str, Any]:
    import httpx

    try:
        r = client.request(method, path, **kw)
    except httpx.HTTPError as e:
        raise SuperServeError(f"cannot reach the server at {client.base_url}: {e}") from None
    try:
        doc = r.json()
    except ValueError:
        doc = {"error": r.text[:300]}
    if r.status_code != 200:
        raise SuperServeError(f"{method} {path}: HTTP {r.status_code}: "
                              f"{doc.get('error', doc)}")
    return doc


def _table(workers: list[dict[str, Any]]) -> str:
    lines = [f"{'id':>4s}  {'state':9s} {'node':16s} pid"]
    for w in workers:
        lines.append(f"{w['id']:>4d}  {w['state']:9s} {w.get('node') or '-'!s:16s} "
                     f"{w.get('pid') or '-'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import httpx

    if args.action == "add" and not 1 <= args.count <= 64:
        raise ConfigError(f"count must be from 1 to 64, got {args.count}")
    timeout = 30.0 + (args.drain_timeout if args.action == "remove" else 0.0)
    verify: Any = True
    if args.cacert:
        import ssl

        verify = ssl.create_default_context(cafile=args.cacert)
    with httpx.Client(base_url=args.url, headers=_headers(args), timeout=timeout,
                      verify=verify) as client:
        if args.action == "list":
            doc = _call(client, "GET", "/v2/admin/workers")
        elif args.action == "add":
            doc = _call(client, "POST", "/v2/admin/workers", json={"count": args.count})
            if args.wait:
                doc = doc | _wait_ready(client, set(doc["added"]), args.timeout)
        else:
            doc = _call(client, "DELETE", f"/v2/admin/workers/{args.worker_id}",
                        params={"timeout_s": args.drain_timeout})
    if args.json:
        print(json.dumps(doc, indent=1))
        return 0
    if args.action == "add":
        print(f"added worker(s) {', '.join(map(str, doc['added']))}")
    elif args.action == "remove":
        print(f"removed worker {doc['removed']}" + ("" if doc["drained"] else
              " (drain timed out: its batch was re-queued)"))
    print(_table(doc["workers"]))
    return 0


def _wait_ready(client: Any, ids: set[int], timeout_s: float) -> dict[str, Any]:
    end = time.monotonic() + timeout_s
    while True:
        doc = _call(client, "GET", "/v2/admin/workers")
        states = {w["id"]: w["state"] for w in doc["workers"]}
        if all(states.get(i) == "ready" for i in ids):
            return doc
        if time.monotonic() > end:
            raise SuperServeError(f"workers {sorted(ids)} not ready after {timeout_s:g} s: "
                                  f"{states}")
        time.sleep(0.2)
