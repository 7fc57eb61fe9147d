"""JPEG requests through tritonclient, unchanged, over HTTP and gRPC (issue 13, item 3): a real
server (router, both front ends) with a fake pool whose logits are the mean of each colour
channel of the decoded image, so the top-k says the image was decoded and preprocessed."""

from __future__ import annotations

import base64
import io
import json
from typing import ClassVar

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import ServerThread, synthetic_table
from superserve.models.contract import InputSpec
from superserve.runtime.fake import FakePool
from superserve.server.codec import ModelIO

LABELS = ("red", "green", "blue", "c3", "c4", "c5")
SPEC = InputSpec(3, 32, 32, (0.5,) * 3, (0.25,) * 3, resize=36, labels=LABELS, num_classes=6)


class ColourPool(FakePool):
    """Logits = per-channel means of each image (classes 0-2), a small constant for the rest;
    it records the shapes of the batches it was given."""

    shapes: ClassVar[list] = []

    def submit(self, worker_id, task):
        images = np.asarray(task.images)
        self.shapes.append(images.shape)
        super().submit(worker_id, task)
        handle = self._pending[worker_id]
        when = handle.when()
        handle.cancel()

        def done():
            self._pending.pop(worker_id, None)
            logits = np.full((len(images), 6), 0.01, dtype=np.float32)
            logits[:, :3] = images.mean(axis=(2, 3))
            self._listener.batch_done(worker_id, task.batch_id, logits, 0.001)

        self._pending[worker_id] = self.clock.call_at(when, done)


class ImageServer(ServerThread):
    async def _start(self):
        from superserve.runtime.clock import LoopClock
        from superserve.scheduling import make_policy
        from superserve.server.app import start_server

        pool = self._make_pool(self.table, LoopClock())
        policy = make_policy("slackfit", self.table, slo_s=self.cfg.default_slo_s)
        running = await start_server(self.cfg, self.table, policy, pool, model_name="colours",
                                     io=ModelIO.for_input(SPEC, max_images=8))
        await running.wait_ready(30)
        return running


@pytest.fixture(scope="module")
def srv():
    s = ImageServer(synthetic_table(), lambda t, c: ColourPool(t, c, n_workers=1),
                    default_slo_s=1.0)
    try:
        yield s
    finally:
        s.close()


def jpeg(rgb, size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def labels_of(top) -> list[str]:
    return [v.decode().split(":")[2] for v in top]


def test_metadata_declares_the_image_input(srv):
    md = thttp.InferenceServerClient(srv.http[7:]).get_model_metadata("colours")
    assert {"name": "image", "datatype": "BYTES", "shape": [-1]} in md["inputs"]
    assert {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]} in md["inputs"]
    assert md["parameters"]["image_input"]["formats"] == ["JPEG", "PNG"]
    g = tgrpc.InferenceServerClient(srv.grpc).get_model_metadata("colours")
    assert [(t.name, t.datatype) for t in g.inputs] == [("input", "FP32"), ("image", "BYTES")]


def test_tritonclient_http_jpeg_top_k(srv):
    c = thttp.InferenceServerClient(srv.http[7:])
    inp = thttp.InferInput("image", [2], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg((250, 10, 10)), jpeg((10, 10, 250))], dtype=object))
    out = thttp.InferRequestedOutput("logits", class_count=3)
    r = c.infer("colours", [inp], outputs=[out])
    top = r.as_numpy("logits")
    assert top.shape == (2, 3)
    assert labels_of(top[0])[0] == "red" and labels_of(top[1])[0] == "blue"
    score, index, _label = top[0][0].decode().split(":")
    assert index == "0" and 0.9 < float(score) <= 1.0
    assert r.get_response()["parameters"]["batch_size"] >= 1
    assert all(s[1:] == (3, 32, 32) for s in ColourPool.shapes)  # the router got FP32 images


def test_tritonclient_grpc_jpeg_top_5(srv):
    c = tgrpc.InferenceServerClient(srv.grpc)
    inp = tgrpc.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg((10, 240, 10))], dtype=object))
    r = c.infer("colours", [inp], outputs=[tgrpc.InferRequestedOutput("logits", class_count=5),
                                           tgrpc.InferRequestedOutput("predicted")])
    top = r.as_numpy("logits")
    assert top.shape == (1, 5) and labels_of(top[0])[0] == "green"
    assert r.as_numpy("predicted").tolist() == [1]
    assert r.get_response().parameters["subnet_id"].int64_param in (0, 1, 2)


def test_images_and_fp32_tensors_share_the_model(srv):
    """An FP32 client sends what the decoder produces: same top-1."""
    c = thttp.InferenceServerClient(srv.http[7:])
    x = np.zeros((1, 3, 32, 32), np.float32)
    x[:, 2] = 1.0
    inp = thttp.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    r = c.infer("colours", [inp], outputs=[thttp.InferRequestedOutput("logits", class_count=1)])
    assert labels_of(r.as_numpy("logits")[0]) == ["blue"]


def test_json_base64_image(srv):
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(jpeg((240, 10, 10))).decode()]}],
            "outputs": [{"name": "logits", "parameters": {"classification": 2}}]}
    r = httpx.post(f"{srv.http}/v2/models/colours/infer", content=json.dumps(body), timeout=10)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 2]
    assert out["data"][0].endswith(":0:red")


@pytest.mark.parametrize("payload,words", [
    (b"definitely not a jpeg", "not a JPEG or PNG"),
    (jpeg((1, 2, 3))[:200], "not a valid JPEG"),
])
def test_bad_images_are_400_and_invalid_argument(srv, payload, words):
    c = thttp.InferenceServerClient(srv.http[7:])
    inp = thttp.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([payload], dtype=object))
    with pytest.raises(InferenceServerException, match=words) as e:
        c.infer("colours", [inp])
    assert e.value.status() == "400"
    g = tgrpc.InferenceServerClient(srv.grpc)
    ginp = tgrpc.InferInput("image", [1], "BYTES")
    ginp.set_data_from_numpy(np.array([payload], dtype=object))
    with pytest.raises(InferenceServerException, match=words) as e:
        g.infer("colours", [ginp])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_a_small_jpeg_request_is_decoded_once(srv, monkeypatch):
    """A small image request takes the HTTP fast lane's checks, then the task path for the
    off-loop image decoding, with the request it already parsed (its JSON is read once)."""
    from superserve.server import http_api

    calls = []
    real = http_api.decode_http

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(http_api, "decode_http", counting)
    body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                        "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(jpeg((250, 10, 10))).decode()]}],
            "outputs": [{"name": "logits", "parameters": {"classification": 1}}]}
    r = httpx.post(f"{srv.http}/v2/models/colours/infer", json=body, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"][0].endswith(":red")
    assert len(calls) == 1
