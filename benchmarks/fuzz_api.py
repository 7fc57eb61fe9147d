"""Fuzz the live front ends: the REST API from its OpenAPI document (schemathesis, positive and
negative cases, the infer fast path included), mutated JSON and binary-extension bodies, and
gRPC with random bytes, mutated protobufs and truncated HTTP/2 frames.

Pass: no response >= 500, no UNKNOWN/INTERNAL gRPC status, the server live after every case.
The CI tests (tests/test_fuzz_api.py) run these drivers with a small fixed budget; this script
runs them with a bigger one against a server it starts on 127.0.0.1 ephemeral ports (fake
worker pool, no model):

    python benchmarks/fuzz_api.py [--rest-per-op 400] [--bodies 5000] [--grpc 5000] [--json]
    python benchmarks/fuzz_api.py --http http://127.0.0.1:8000 --grpc-target 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FIELD_IMG = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)


@dataclass
class FuzzReport:
    surface: str
    cases: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # >= 500, UNKNOWN/INTERNAL, or dead
    seconds: float = 0.0
    kinds: Counter = field(default_factory=Counter)  # cases per kind (json, binary, ...)
    kind_failures: Counter = field(default_factory=Counter)

    def count(self, kind: str, status: Any) -> None:
        self.statuses[status] += 1
        self.kinds[kind] += 1

    def fail(self, kind: str, message: str) -> None:
        self.failures.append(message)
        self.kind_failures[kind] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"surface": self.surface, "cases": self.cases, "seconds": round(self.seconds, 2),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
                "kinds": {k: {"cases": n, "failures": self.kind_failures[k]}
                          for k, n in sorted(self.kinds.items())},
                "failures": len(self.failures), "first_failures": self.failures[:5]}


def _alive(session: Any, base_url: str) -> bool:
    try:
        return session.get(base_url + "/v2/health/live", timeout=5).status_code == 200
    except Exception:  # noqa: BLE001 - any transport failure means not alive
        return False


def fuzz_rest_schema(base_url: str, per_op: int, seed: int = 0,
                     headers: dict[str, str] | None = None) -> FuzzReport:
    """Schemathesis cases from the server's own /v2/openapi.json, positive and negative."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    rep = FuzzReport("rest-schema")
    session = requests.Session()
    doc = session.get(base_url + "/v2/openapi.json", timeout=10, headers=headers).json()
    schema = schemathesis.openapi.from_dict(doc)
    t0 = time.perf_counter()
    for res in schema.get_all_operations():
        op = res.ok()
        names = {p.name for p in op.path_parameters}
        # most cases name the served model (so they reach validation, not the 404), a few
        # any model; positive cases fit the schema, negative ones break it
        known = {k: v for k, v in (("model_name", "resnet"), ("model_version", "1"))
                 if k in names}
        variants = [(GenerationMode.POSITIVE, known, per_op),
                    (GenerationMode.NEGATIVE, known, per_op),
                    (GenerationMode.POSITIVE, None, max(1, per_op // 5))]
        for mode, path_params, budget in variants:
            if path_params is None and not names:
                continue

            @hseed(seed)
            @settings(max_examples=budget, deadline=None, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode, path_parameters=path_params or None))
            def one(case: Any) -> None:
                rep.cases += 1
                try:
                    r = case.call(base_url=base_url, session=session, timeout=10,
                                  headers=headers)
                    status = r.status_code
                except requests.RequestException as e:
                    status = f"error:{type(e).__name__}"
                kind = mode.name.lower()  # noqa: B023  `one` runs within this iteration
                rep.count(kind, status)
                if not isinstance(status, int) or status >= 500:
                    rep.fail(kind, f"{case.method} {case.formatted_path}: {status} "
                                   f"{str(case.body)[:200]}")
                if not _alive(session, base_url):
                    rep.fail(kind, f"server not live after {case.method} "
                                   f"{case.formatted_path}")

            try:
                one()
            except Unsatisfiable:  # nothing to vary (no parameters, or no negative form)
                pass
    rep.seconds = time.perf_counter() - t0
    return rep


def _valid_json_body() -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                        "data": FIELD_IMG.ravel().tolist()}], "parameters": {"slo_ms": 500}}


def _mutate(b: bytes, rng: random.Random) -> bytes:
    """One random edit: flip bytes, cut, splice a fragment, duplicate a slice."""
    b = bytearray(b)
    k = rng.randrange(6)
    if k == 0 and b:
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif k == 1 and b:
        b = b[:rng.randrange(len(b))]
    elif k == 2:
        frag = rng.choice([b"[", b"{", b"]", b"}", b'"', b"\\", b"true", b"null", b"-",
                           b"1e999", b"9" * 50, b"NaN", b"\x00", b"\xff\xfe", b",", b":"])
        i = rng.randrange(len(b) + 1)
        b[i:i] = frag * rng.randint(1, 40)
    elif k == 3 and b:
        i = rng.randrange(len(b))
        j = min(len(b), i + rng.randint(1, 200))
        b[i:i] = b[i:j] * rng.randint(1, 5)
    elif k == 4:
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        s = b.decode("latin-1")
        for a, c in ((rng.choice(['"FP32"', '"input"', "28", "1,", '"slo_ms"', "true"]),
                      rng.choice(['"FP16"', '"x"', "-1", '"1",', "1e400", "[]", "{}",
                                  "null", '"false"', "0"])),):
            s = s.replace(a, c, 1)
        b = bytearray(s.encode("latin-1"))
    return bytes(b)


def fuzz_rest_bodies(base_url: str, n: int, seed: int = 0,
                     headers: dict[str, str] | None = None) -> FuzzReport:
    """Mutated JSON bodies and binary-extension bodies (with their header length, sometimes
    wrong), some gzipped, POSTed to the infer fast path."""
    import gzip

    import requests

    rep = FuzzReport("rest-bodies")
    rng = random.Random(seed)
    session = requests.Session()
    url = base_url + "/v2/models/resnet/infer"
    base_json = json.dumps(_valid_json_body()).encode()
    raw = FIELD_IMG.tobytes()
    head = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"slo_ms": 500},
                       "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
                      ).encode()
    t0 = time.perf_counter()
    for i in range(n):
        hdrs = dict(headers or {})
        kind = "json" if i % 2 == 0 else "binary"
        if kind == "json":
            body = base_json
            for _ in range(rng.randint(1, 3)):
                body = _mutate(body, rng)
        else:
            h = _mutate(head, rng) if rng.random() < 0.7 else head
            tail = _mutate(raw, rng) if rng.random() < 0.5 else raw
            body = h + tail
            hl = len(h) if rng.random() < 0.8 else rng.choice([0, 1, len(body), len(body) + 1,
                                                                len(h) - 1, 10**15])
            hdrs["Inference-Header-Content-Length"] = str(hl)
        if rng.random() < 0.15:
            body = gzip.compress(body)
            if rng.random() < 0.3:
                body = _mutate(body, rng)
            hdrs["Content-Encoding"] = rng.choice(["gzip", "gzip", "x-gzip", "br", "gzip, gzip"])
        rep.cases += 1
        try:
            status = session.post(url, data=body, headers=hdrs, timeout=10).status_code
        except requests.RequestException as e:
            status = f"error:{type(e).__name__}"
        rep.count(kind, status)
        if not isinstance(status, int) or status >= 500:
            rep.fail(kind, f"case {i}: {status}: {body[:120]!r}")
            if not _alive(session, base_url):
                rep.fail(kind, f"server not live after case {i}")
    if not _alive(session, base_url):
        rep.failures.append("server not live at the end")
    rep.seconds = time.perf_counter() - t0
    return rep


def _grpc_valid_request() -> bytes:
    from superserve.server import proto

    pb = proto.pb2()
    req = pb.ModelInferRequest(model_name="resnet", id="fuzz")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 1, 28, 28])
    req.raw_input_contents.append(FIELD_IMG.tobytes())
    req.parameters["slo_ms"].double_param = 500.0
    req.outputs.add(name="logits")
    return req.SerializeToString()


def fuzz_grpc(target: str, n: int, seed: int = 0, frames: int = 50,
              metadata: tuple[tuple[str, str], ...] | None = None) -> FuzzReport:
    """Random bytes and mutated ModelInfer protobufs on every method, then raw TCP
    connections that send the HTTP/2 preface and truncated or garbage frames."""
    import grpc

    rep = FuzzReport("grpc")
    rng = random.Random(seed)
    ch = grpc.insecure_channel(target)
    methods = ["ModelInfer"] * 6 + ["ModelReady", "ModelMetadata", "ServerLive",
                                    "ServerReady", "ServerMetadata"]
    calls = {m: ch.unary_unary(f"/inference.GRPCInferenceService/{m}",
                               request_serializer=None, response_deserializer=None)
             for m in set(methods)}
    live = calls["ServerLive"]
    valid = _grpc_valid_request()
    bad_codes = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
    t0 = time.perf_counter()
    try:
        for i in range(n):
            m = rng.choice(methods)
            kind = "random-bytes" if rng.random() < 0.3 else "mutated-protobuf"
            if kind == "random-bytes":
                msg = bytes(rng.randrange(256) for _ in range(rng.randint(0, 300)))
            else:
                msg = valid
                for _ in range(rng.randint(1, 4)):
                    msg = _mutate(msg, rng)
            rep.cases += 1
            try:
                calls[m](msg, timeout=10, metadata=metadata)
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                code = e.code()
            rep.count(kind, code.name)
            if code in bad_codes or code == grpc.StatusCode.UNAVAILABLE:
                rep.fail(kind, f"case {i} {m}: {code.name}")
                try:
                    live(b"", timeout=5, metadata=metadata)
                except grpc.RpcError:
                    rep.fail(kind, f"server not live after case {i}")
    finally:
        ch.close()
    host, port = target.rsplit(":", 1)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    for i in range(frames):
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
        # a frame header promising more payload than is sent, or garbage after the preface
        frame = (rng.randint(1, 2**14).to_bytes(3, "big") + bytes([rng.randrange(10), 0])
                 + rng.randint(0, 2**31 - 1).to_bytes(4, "big") + junk)
        payload = preface + settings_frame + frame if i % 3 else preface[:rng.randint(0, 24)] + junk
        rep.cases += 1
        try:
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.sendall(payload)
                s.settimeout(0.2)
                try:
                    s.recv(4096)
                except (TimeoutError, OSError):
                    pass
            rep.count("h2-frames", "h2-frames")
        except OSError as e:
            rep.fail("h2-frames", f"frame case {i}: cannot connect: {e}")
    ch = grpc.insecure_channel(target)
    try:
        ch.unary_unary("/inference.GRPCInferenceService/ServerLive", request_serializer=None,
                       response_deserializer=None)(b"", timeout=5, metadata=metadata)
        ch.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                       response_deserializer=None)(valid, timeout=10, metadata=metadata)
    except grpc.RpcError as e:
        rep.fail("h2-frames", f"server not serving after the frame cases: {e.code().name}")
    finally:
        ch.close()
    rep.seconds = time.perf_counter() - t0
    return rep


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rest-per-op", type=int, default=400,
                    help="schemathesis examples per operation and mode")
    ap.add_argument("--bodies", type=int, default=5000, help="mutated REST infer bodies")
    ap.add_argument("--grpc", type=int, default=5000, help="gRPC messages")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--http", default=None,
                    help="fuzz this running server (http://127.0.0.1:PORT) instead of starting "
                         "one in process; --grpc-target adds its gRPC port")
    ap.add_argument("--grpc-target", default=None, help="127.0.0.1:PORT of that server")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    if args.http is not None:
        reps = [fuzz_rest_schema(args.http, args.rest_per_op, args.seed),
                fuzz_rest_bodies(args.http, args.bodies, args.seed)]
        if args.grpc_target:
            reps.append(fuzz_grpc(args.grpc_target, args.grpc, args.seed))
    else:
        sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]
                               / "tests"))
        from conftest import ServerThread, synthetic_table
        from superserve.runtime.fake import FakePool

        srv = ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1),
                           max_body_bytes=400_000)
        try:
            reps = [fuzz_rest_schema(srv.http, args.rest_per_op, args.seed),
                    fuzz_rest_bodies(srv.http, args.bodies, args.seed),
                    fuzz_grpc(srv.grpc, args.grpc, args.seed)]
        finally:
            srv.close()
    out = {"reports": [r.as_dict() for r in reps],
           "cases": sum(r.cases for r in reps), "failures": sum(len(r.failures) for r in reps),
           # the closing note's figures: cases per surface, REST responses >= 500 (and
           # transport errors), gRPC UNKNOWN/INTERNAL/UNAVAILABLE
           "per_surface": {k: n for r in reps for k, n in
                           (r.kinds.items() if r.surface == "rest-bodies"
                            else [(r.surface, r.cases)])},
           "rest_responses_over_499": sum(
               v for r in reps if r.surface.startswith("rest") for k, v in r.statuses.items()
               if (isinstance(k, int) and k >= 500) or str(k).startswith("error:")),
           "grpc_bad_codes": sum(r.statuses[c] for r in reps if r.surface == "grpc"
                                 for c in ("UNKNOWN", "INTERNAL", "UNAVAILABLE"))}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for r in reps:
            d = r.as_dict()
            print(f"{d['surface']:12s} {d['cases']:6d} cases {d['seconds']:7.1f} s  "
                  f"failures {d['failures']}  statuses {d['statuses']}")
            for f in d["first_failures"]:
                print("   ", f)
    return 1 if out["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
