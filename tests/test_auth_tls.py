"""Bearer-token authentication and TLS (issue 15, item 3), with tritonclient over HTTP and
gRPC. A self-signed certificate for 127.0.0.1 is made in the test with the openssl CLI (no
network); servers bind 127.0.0.1 ephemeral ports with the fake pool."""

from __future__ import annotations

import shutil
import ssl
import subprocess

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from conftest import ServerThread, synthetic_table
from superserve.errors import ConfigError
from superserve.runtime.fake import FakePool
from superserve.server.config import ServeConfig

TOKEN = "s3cret-token-0123456789abcdef"
IMG = np.zeros((1, 1, 28, 28), np.float32)


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("auth") / "tokens"
    p.write_text(f"# serving tokens\n{TOKEN}\nother-token-abcdefghijklmnop\n")
    return str(p)


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found")
    d = tmp_path_factory.mktemp("tls")
    crt, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(crt), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return str(crt), str(key)


def _server(**kw):
    return ServerThread(synthetic_table(), lambda t, c: FakePool(t, c, n_workers=1), **kw)


@pytest.fixture(scope="module")
def auth_srv(token_file):
    s = _server(auth_token_file=token_file, auth_open_health=True)
    try:
        yield s
    finally:
        s.close()


def test_http_bearer_token(auth_srv):
    url = f"{auth_srv.http}/v2/models/resnet/infer"
    body = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                        "data": [0.0] * 784}], "parameters": {"slo_ms": 500}}
    r = httpx.post(url, json=body, timeout=10)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in r.json()["error"]
    r = httpx.post(url, json=body, headers={"Authorization": "Bearer wrong-token-xxxxxxxx"},
                   timeout=10)
    assert r.status_code == 401 and "invalid" in r.json()["error"]
    r = httpx.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    # metadata needs the token; health and /metrics are open by --auth-open-health
    assert httpx.get(f"{auth_srv.http}/v2/models/resnet", timeout=10).status_code == 401
    assert httpx.get(f"{auth_srv.http}/v2/health/ready", timeout=10).status_code == 200
    assert httpx.get(f"{auth_srv.http}/metrics", timeout=10).status_code == 200
    c = thttp.InferenceServerClient(auth_srv.http.removeprefix("http://"))
    try:
        inp = thttp.InferInput("input", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(IMG, binary_data=True)
        with pytest.raises(InferenceServerException, match="authentication"):
            c.infer("resnet", [inp])
        res = c.infer("resnet", [inp], headers={"Authorization": f"Bearer {TOKEN}"})
        assert res.as_numpy("logits").shape == (1, 10)
    finally:
        c.close()


def test_grpc_bearer_token(auth_srv):
    c = tgrpc.InferenceServerClient(auth_srv.grpc)
    try:
        assert c.is_server_live()  # open health
        inp = tgrpc.InferInput("input", [1, 1, 28, 28], "FP32")
        inp.set_data_from_numpy(IMG)
        with pytest.raises(InferenceServerException) as e:
            c.infer("resnet", [inp])
        assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(InferenceServerException) as e:
            c.infer("resnet", [inp], headers={"authorization": "Bearer nope-nope-nope-nope"})
        assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        res = c.infer("resnet", [inp], headers={"authorization": f"Bearer {TOKEN}"})
        assert res.as_numpy("predicted").shape == (1,)
    finally:
        c.close()


def test_health_and_metrics_closed_without_the_flag(token_file):
    s = _server(auth_token_file=token_file)
    try:
        assert httpx.get(f"{s.http}/v2/health/live", timeout=10).status_code == 401
        assert httpx.get(f"{s.http}/metrics", timeout=10).status_code == 401
        h = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{s.http}/metrics", headers=h, timeout=10).status_code == 200
        ch = grpc.insecure_channel(s.grpc)
        try:
            live = ch.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                  request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as e:
                live(b"", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            live(b"", timeout=5, metadata=(("authorization", f"Bearer {TOKEN}"),))
        finally:
            ch.close()
    finally:
        s.close()


def test_tls_with_tritonclient_http_and_grpc(cert, token_file):
    crt, key = cert
    s = _server(tls_cert=crt, tls_key=key, auth_token_file=token_file)
    try:
        port = s.running.http_port
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ctx = ssl.create_default_context(cafile=crt)
        r = httpx.get(f"https://127.0.0.1:{port}/v2/health/ready", verify=ctx, headers=auth,
                      timeout=10)
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPError):  # plaintext to a TLS port
            httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5)
        c = thttp.InferenceServerClient(
            f"127.0.0.1:{port}", ssl=True,
            ssl_context_factory=lambda: ssl.create_default_context(cafile=crt))
        try:
            inp = thttp.InferInput("input", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(IMG, binary_data=True)
            res = c.infer("resnet", [inp], headers=auth, parameters={"slo_ms": 500})
            assert res.as_numpy("logits").shape == (1, 10)
        finally:
            c.close()
        with open(crt, "rb") as f:
            root = f.read()
        g = tgrpc.InferenceServerClient(s.grpc, ssl=True, root_certificates=crt)
        try:
            inp = tgrpc.InferInput("input", [1, 1, 28, 28], "FP32")
            inp.set_data_from_numpy(IMG)
            res = g.infer("resnet", [inp], headers={"authorization": f"Bearer {TOKEN}"})
            assert res.as_numpy("predicted").shape == (1,)
        finally:
            g.close()
        ch = grpc.secure_channel(s.grpc, grpc.ssl_channel_credentials(root))
        try:
            live = ch.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                  request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as e:  # TLS, but no token
                live(b"", timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        finally:
            ch.close()
    finally:
        s.close()


def test_non_loopback_without_auth_refuses_unless_insecure(token_file, cert):
    with pytest.raises(ConfigError, match="--insecure"):
        ServeConfig(host="0.0.0.0")
    ServeConfig(host="0.0.0.0", insecure=True)
    ServeConfig(host="0.0.0.0", auth_token_file=token_file)
    ServeConfig(host="::1")
    ServeConfig(host="localhost")
    with pytest.raises(ConfigError, match="together"):
        ServeConfig(tls_cert=cert[0])


def test_token_file_rules(tmp_path):
    from superserve.server.auth import load_tokens

    p = tmp_path / "t"
    p.write_text("# only a comment\n\n")
    with pytest.raises(ConfigError, match="no token"):
        load_tokens(p)
    p.write_text("short\n")
    with pytest.raises(ConfigError, match="16"):
        load_tokens(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_tokens(tmp_path / "missing")
