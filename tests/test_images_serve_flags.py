"""`superserve serve --labels FILE` and `--max-image-pixels N` below the CLI: the labels file
(Triton's form: one class name per line, line i naming output i) reaches the classification
output as "<score>:<index>:<label>"; an image over the pixel limit is refused from its header
with HTTP 400 / gRPC INVALID_ARGUMENT, the message naming its size and the limit. The CLI end
to end (both flags through `superserve serve`) is tests/test_ofa_serve.py."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from PIL import Image
from tritonclient.utils import InferenceServerException

from conftest import synthetic_table
from superserve.errors import ConfigError
from superserve.models.contract import InputSpec, read_labels
from superserve.server.codec import ModelIO
from superserve.server.images import DEFAULT_MAX_PIXELS
from test_tritonclient_images import SPEC, ColourPool, ImageServer

NAMES = ("crimson", "lime", "navy", "x3", "x4", "x5")


def jpeg(w: int, h: int, rgb=(240, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_read_labels_is_one_class_a_line(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("tench\ngoldfish, Carassius auratus\r\ngreat white shark\n\n\n")
    assert read_labels(f) == ("tench", "goldfish, Carassius auratus", "great white shark")
    f.write_text("a\n\nb\n")
    with pytest.raises(ConfigError, match="line 2 is empty"):
        read_labels(f)
    f.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_labels(f)
    with pytest.raises(ConfigError, match="cannot read"):
        read_labels(tmp_path / "missing.txt")


def test_labels_must_name_every_output(tmp_path):
    f = tmp_path / "labels.txt"
    f.write_text("\n".join(NAMES[:4]) + "\n")
    with pytest.raises(ConfigError, match="names 4 classes but the model has 6 outputs"):
        SPEC.with_labels(read_labels(f))
    unknown = InputSpec(3, 8, 8, (0.5,) * 3, (0.25,) * 3)  # a family that does not say
    assert unknown.with_labels(NAMES).num_classes == 6


def test_serve_config_and_model_io_take_both_flags(tmp_path):
    from superserve.server.components import model_io
    from superserve.server.config import ServeConfig

    assert ServeConfig().max_image_pixels == DEFAULT_MAX_PIXELS
    assert ServeConfig().labels_file is None
    with pytest.raises(ConfigError, match="max_image_pixels must be an integer >= 1"):
        ServeConfig(max_image_pixels=0)
    with pytest.raises(ConfigError, match="labels_file: no file"):
        ServeConfig(labels_file=str(tmp_path / "nope.txt"))
    f = tmp_path / "digits.txt"
    f.write_text("".join(f"digit {i}\n" for i in range(10)))
    m = model_io("resnet", labels_file=str(f), max_image_pixels=1234)
    assert m.labels == tuple(f"digit {i}" for i in range(10)) and m.max_image_pixels == 1234
    assert model_io("resnet").max_image_pixels == DEFAULT_MAX_PIXELS
    f.write_text("zero\none\n")
    with pytest.raises(ConfigError, match="names 2 classes but the model has 10 outputs"):
        model_io("resnet", labels_file=str(f))


class LimitedServer(ImageServer):
    """The colour server with a labels file's names and a 100 x 100 pixel limit."""

    io = ModelIO.for_input(SPEC.with_labels(NAMES), max_images=8, max_image_pixels=100 * 100)

    async def _start(self):
        from superserve.runtime.clock import LoopClock
        from superserve.scheduling import make_policy
        from superserve.server.app import start_server

        pool = self._make_pool(self.table, LoopClock())
        policy = make_policy("slackfit", self.table, slo_s=self.cfg.default_slo_s)
        running = await start_server(self.cfg, self.table, policy, pool, model_name="colours",
                                     io=self.io)
        await running.wait_ready(30)
        return running


@pytest.fixture(scope="module")
def srv():
    s = LimitedServer(synthetic_table(), lambda t, c: ColourPool(t, c, n_workers=1),
                      default_slo_s=1.0)
    try:
        yield s
    finally:
        s.close()


def test_classification_reads_the_labels_files_names(srv):
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                        "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(jpeg(100, 100, (10, 10, 240))).decode()]}],
            "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}
    r = httpx.post(f"{srv.http}/v2/models/colours/infer", content=json.dumps(body), timeout=10)
    assert r.status_code == 200, r.text
    top = r.json()["outputs"][0]["data"]
    assert top[0].endswith(":2:navy")
    for element in top:  # "<score>:<index>:<label>", the label the file's line of the index
        score, index, label = element.split(":", 2)
        float(score)
        assert label == NAMES[int(index)]


def test_an_image_over_the_pixel_limit_is_400_and_invalid_argument(srv):
    big = jpeg(101, 100)  # 10,100 pixels: one column over the limit
    words = r"101x100 = 10100 pixels is larger than the limit of 10000 pixels"
    c = thttp.InferenceServerClient(srv.http[7:])
    inp = thttp.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([big], dtype=object))
    with pytest.raises(InferenceServerException, match=words) as e:
        c.infer("colours", [inp])
    assert e.value.status() == "400"
    g = tgrpc.InferenceServerClient(srv.grpc)
    ginp = tgrpc.InferInput("image", [1], "BYTES")
    ginp.set_data_from_numpy(np.array([big], dtype=object))
    with pytest.raises(InferenceServerException, match=words) as e:
        g.infer("colours", [ginp])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    ok = thttp.InferInput("image", [1], "BYTES")  # at the limit: served
    ok.set_data_from_numpy(np.array([jpeg(100, 100)], dtype=object))
    r = c.infer("colours", [ok], outputs=[thttp.InferRequestedOutput("logits", class_count=1)])
    assert r.as_numpy("logits")[0][0].decode().endswith(":0:crimson")
