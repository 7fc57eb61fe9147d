"""benchmarks/client_floor.py: its null server answers keep-alive KServe v2 requests at once
with a response the independent client reads (200, the logits' argmax, subnet_accuracy)."""

import http.client
import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _client_module():
    spec = importlib.util.spec_from_file_location("open_loop_client",
                                                  BENCH / "open_loop_client.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_null_server_answers_what_the_client_reads():
    client = _client_module()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(BENCH / "client_floor.py"), "--serve",
                             str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert "ready" in proc.stdout.readline()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = client.bodies(np.zeros((1, 1, 28, 28), np.float32), 50.0)[0]
        for _ in range(3):  # one connection, kept alive
            conn.request("POST", "/v2/models/resnet/infer", body,
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            doc = json.loads(r.read())
            assert r.status == 200
            assert doc["parameters"]["subnet_accuracy"] == 1.0
            assert client.predicted(doc) == 1
        conn.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
