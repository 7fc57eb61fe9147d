"""The admin routes (server/admin.py) in the OpenAPI document (server/openapi.py), and a
schema-driven fuzz of them behind a bearer token: every answer a documented 4xx or a 200,
never a 5xx, the server live and serving after every case. (tests/test_fuzz_api.py fuzzes
the whole document without auth; this one looks at the admin routes closely.)"""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from conftest import ServerThread, synthetic_table
from superserve.runtime.fake import FakePool
from superserve.server.openapi import PATHS, allowed_methods, openapi_document

pytest.importorskip("schemathesis")

TOKEN = "admin-fuzz-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = ("/v2/admin/workers", "/v2/admin/workers/{worker_id}")


def test_document_and_route_table_agree():
    doc = openapi_document()
    assert {p: tuple(sorted(m.upper() for m in ops)) for p, ops in doc["paths"].items()} \
        == {p: tuple(sorted(m)) for p, m in PATHS.items()}
    assert allowed_methods("/v2/admin/workers") == ("GET", "POST")
    assert allowed_methods("/v2/admin/workers/3") == ("DELETE",)
    delete = doc["paths"]["/v2/admin/workers/{worker_id}"]["delete"]
    assert {"200", "400", "401", "404", "409"} <= set(delete["responses"])


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(TOKEN + "\n")
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=2),
                     auth_token_file=str(tokens))
    try:
        yield s
    finally:
        s.close()


def _fuzz_admin(base_url: str, headers: dict[str, str] | None, per_op: int, seed: int
                ) -> tuple[Counter, list[str]]:
    """Positive and negative schemathesis cases of the admin operations, sent with `headers`:
    (method, path, status) counts and the failures (a 5xx, an undocumented status, the server not live)."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    session = requests.Session()
    doc = session.get(base_url + "/v2/openapi.json", timeout=10, headers=AUTH).json()
    doc["paths"] = {p: v for p, v in doc["paths"].items() if p in ADMIN}
    schema = schemathesis.openapi.from_dict(doc)
    seen: Counter = Counter()
    failures: list[str] = []
    def cases(op: Any, mode: Any, documented: set[int]) -> Any:
        @hseed(seed)
        @settings(max_examples=per_op, deadline=None, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def one(case: Any) -> None:
            r = case.call(base_url=base_url, session=session, timeout=30, headers=headers)
            seen[(case.method, op.path, r.status_code)] += 1
            if r.status_code >= 500 or r.status_code not in documented:
                failures.append(f"{case.method} {case.formatted_path} {case.query} "
                                f"{str(case.body)[:100]}: {r.status_code} {r.text[:200]}")
            live = session.get(base_url + "/v2/health/live", timeout=5, headers=AUTH)
            if live.status_code != 200:
                failures.append(f"not live after {case.method} {case.formatted_path}")

        return one

    for res in schema.get_all_operations():
        op = res.ok()
        documented = {int(c) for c in doc["paths"][op.path][op.method.lower()]["responses"]}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                cases(op, mode, documented)()
            except Unsatisfiable:  # no negative form (GET has no parameters)
                pass
    return seen, failures


def test_fuzz_admin_routes_with_token(srv):
    seen, failures = _fuzz_admin(srv.http, AUTH, per_op=40, seed=7)
    assert failures == [], failures[:5]
    by_op: dict[tuple[str, str], set[int]] = {}
    for method, path, status in seen:
        by_op.setdefault((method, path), set()).add(status)
    assert by_op[("GET", ADMIN[0])] == {200}
    assert {200, 400} <= by_op[("POST", ADMIN[0])]
    assert {400, 404} <= by_op[("DELETE", ADMIN[1])]
    assert by_op[("DELETE", ADMIN[1])] & {200, 409}  # some case named a worker kept
    # still serving, with at least one worker ready, and the list agrees with the router
    with httpx.Client(base_url=srv.http, headers=AUTH, timeout=30) as c:
        workers = c.get("/v2/admin/workers").json()["workers"]
        ready = [w for w in workers if w["state"] == "ready"]
        assert ready and len(ready) == srv.running.router.ready_workers
        r = c.post("/v2/models/resnet/infer", json={"inputs": [{
            "name": "input", "datatype": "FP32", "shape": [1, 1, 28, 28],
            "data": [0.0] * 784}]})
        assert r.status_code == 200, r.text
        # a body past the admin limit, and JSON nested past the parser's recursion limit
        assert c.post("/v2/admin/workers", content=b" " * 5000).status_code == 413
        assert c.post("/v2/admin/workers", content=b"[" * 4000).status_code == 400
    assert srv.running.router.open_requests == 0


def test_admin_routes_refuse_without_token(srv):
    before = srv.running.pool.n_workers
    seen, failures = _fuzz_admin(srv.http, None, per_op=10, seed=8)
    assert failures == [], failures[:5]
    assert {status for (_, _, status) in seen} == {401}
    assert srv.running.pool.n_workers == before  # nothing added or removed
