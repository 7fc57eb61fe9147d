"""Fuzz the live front ends in CI with a fixed budget (the drivers and a bigger budget:
benchmarks/fuzz_api.py): schemathesis cases from the server's own /v2/openapi.json (the infer
fast path included), mutated JSON and binary-extension bodies, random and mutated gRPC
messages and truncated HTTP/2 frames. No response >= 500, no UNKNOWN/INTERNAL, the server
live after every case."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import ServerThread, synthetic_table
from superserve.runtime.fake import FakePool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import fuzz_api

pytest.importorskip("schemathesis")


@pytest.fixture(scope="module")
def srv():
    s = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1),
                     max_body_bytes=400_000)
    try:
        yield s
    finally:
        s.close()


def _check(rep):
    assert rep.failures == [], rep.as_dict()
    assert not any(isinstance(k, int) and k >= 500 for k in rep.statuses), rep.statuses


def test_fuzz_rest_from_openapi(srv):
    rep = fuzz_api.fuzz_rest_schema(srv.http, per_op=25, seed=1)
    _check(rep)
    assert rep.cases >= 100 and rep.statuses[200] > 0 and rep.statuses[400] > 0


def test_fuzz_rest_mutated_bodies(srv):
    rep = fuzz_api.fuzz_rest_bodies(srv.http, 600, seed=2)
    _check(rep)
    assert rep.cases == 600 and rep.statuses[400] > 0


def test_fuzz_grpc_bytes_and_frames(srv):
    rep = fuzz_api.fuzz_grpc(srv.grpc, 800, seed=3, frames=40)
    _check(rep)
    assert rep.cases == 840 and rep.statuses["INVALID_ARGUMENT"] > 0
