"""`superserve serve` as users run it: a subprocess on ephemeral 127.0.0.1 ports with
profile workers (no model needed), then SIGTERM: admitted requests are still answered,
new ones refused, and the process exits 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from conftest import serving_port, synthetic_table

BODY = json.dumps({"inputs": [{"name": "input", "shape": [4, 1, 28, 28], "datatype": "FP32",
                               "data": np.zeros(4 * 784).tolist()}],
                   "parameters": {"slo_ms": 10000}}).encode()


def test_serve_cli_sigterm_drains_and_exits(tmp_path):
    table = tmp_path / "resnet.json"
    synthetic_table().save(table)
    # profile workers sleep the profiled latency: ~10 ms per batch, enough to hold requests
    proc = subprocess.Popen(
        [sys.executable, "-m", "superserve.cli", "-v", "serve", "--table", str(table),
         "--worker-kind", "profile", "--http-port", "0", "--grpc-port", "0", "--workers", "1",
         "--drain-timeout-s", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        port = serving_port(proc, "resnet", lines, 60)
        assert port, "".join(lines)
        url = f"http://127.0.0.1:{port}/v2/models/resnet/infer"
        post = lambda: httpx.post(url, content=BODY, timeout=30)
        with ThreadPoolExecutor(12) as ex:
            futs = [ex.submit(post) for _ in range(12)]
            end = time.monotonic() + 10
            while time.monotonic() < end:  # wait until the server holds requests
                m = re.search(r"^superserve_queue_depth (\S+)",
                              httpx.get(f"http://127.0.0.1:{port}/metrics").text, re.MULTILINE)
                if m and float(m.group(1)) > 0:
                    break
            proc.send_signal(signal.SIGTERM)
            codes = [f.result().status_code for f in futs]
        assert set(codes) <= {200, 503} and codes.count(200) >= 1, codes
        rc = proc.wait(timeout=30)
        out = proc.stdout.read()
        assert rc == 0, "".join(lines) + out
        assert "draining" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("cpus,msg", [("99", "this machine has 0.."), ("a,b", "comma-separated CPU ids")])
def test_serve_rejects_bad_worker_cpus(cpus, msg, capsys):
    from superserve.cli import main

    assert main(["serve", "--worker-cpus", cpus, "--worker-kind", "noop"]) == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize("ms", ["-1", "nan", "inf"])
def test_serve_rejects_a_bad_batch_wait(ms, capsys):
    from superserve.cli import main

    assert main(["serve", "--batch-wait-ms", ms, "--worker-kind", "noop"]) == 2
    assert "--batch-wait-ms must be >= 0" in capsys.readouterr().err
