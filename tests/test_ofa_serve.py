"""`superserve serve --model ofa_mbv3 --weights W.pth --table T.json` as a user runs it (issue 13,
item 5): a subprocess with a real torch worker, random weights in OFA's published layout, a
two-subnet table at the smallest resolution (r=128, statistics from the weights' shared running
statistics: no calibration pass), a labels file and a pixel limit; one JPEG over HTTP as
base64 JSON gets a 200 with the top-5 classification and the subnet that served it, and one
over the limit a 400 that names the size and the limit. About 10-20 s on this 2-core machine
(worker start: torch, the 7.7 M-parameter supernet, its weights)."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import serving_port
from superserve.profiling.table import ProfileTable, SubnetProfile


@pytest.fixture(scope="module")
def ofa_dir(tmp_path_factory):
    from superserve.models import build_supernet

    d = tmp_path_factory.mktemp("ofa_serve")
    torch.manual_seed(0)
    net = build_supernet("ofa_mbv3").eval()
    torch.save({"state_dict": net.state_dict()}, d / "W.pth")
    small = net.space.smallest()
    other = dataclasses.replace(small, e=(4,) * len(small.e))
    rows = [SubnetProfile(id=i, spec=s.to_dict(), accuracy=0.6 + 0.1 * i,
                          latency_ms={1: 30.0 + 5 * i, 2: 50.0 + 5 * i})
            for i, s in enumerate((small, other))]
    ProfileTable.build("ofa_mbv3", rows, (1, 2), device="cpu", threads=1).save(d / "T.json")
    net.store_shared_stats([small, other])
    net.norm_store.subset([small, other]).save(d / "T.norm.pt")
    (d / "labels.txt").write_text("".join(f"class {i:04d}\n" for i in range(1000)))
    return d


def _jpeg(w: int, h: int) -> str:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return base64.b64encode(buf.getvalue()).decode()


def _body(image_b64: str) -> bytes:
    return json.dumps({
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                    "parameters": {"content_type": "base64"}, "data": [image_b64]}],
        "outputs": [{"name": "logits", "parameters": {"classification": 5}}],
        "parameters": {"slo_ms": 5000}}).encode()


def test_ofa_mbv3_serve_cli_jpeg_over_http(ofa_dir):
    d = ofa_dir
    limit = 400 * 300
    proc = subprocess.Popen(
        [sys.executable, "-m", "superserve.cli", "serve", "--model", "ofa_mbv3",
         "--weights", str(d / "W.pth"), "--table", str(d / "T.json"),
         "--labels", str(d / "labels.txt"), "--max-image-pixels", str(limit),
         "--http-port", "0", "--grpc-port", "-1", "--workers", "1", "--slo-ms", "5000",
         "--drain-timeout-s", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    try:
        port = serving_port(proc, "ofa_mbv3", lines, 90)
        assert port, "".join(lines)
        url = f"http://127.0.0.1:{port}/v2/models/ofa_mbv3"
        meta = httpx.get(url, timeout=10).json()
        assert {i["name"]: i["datatype"] for i in meta["inputs"]}["image"] == "BYTES"

        r = httpx.post(f"{url}/infer", content=_body(_jpeg(400, 300)), timeout=60)
        assert r.status_code == 200, r.text
        out = r.json()
        top = out["outputs"][0]
        assert top["datatype"] == "BYTES" and top["shape"] == [1, 5]
        for element in top["data"]:
            score, index, label = element.split(":", 2)
            float(score)
            assert label == f"class {int(index):04d}"
        assert out["parameters"]["subnet_id"] in (0, 1)

        r = httpx.post(f"{url}/infer", content=_body(_jpeg(401, 300)), timeout=60)
        assert r.status_code == 400, r.text
        assert "401x300 = 120300 pixels is larger than the limit of 120000" in r.text
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
