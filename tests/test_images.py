"""Image inputs (issue 13, item 3): encoded JPEG/PNG requests decoded and preprocessed per the
family's input contract, off the event loop; the classification extension; the input contract
read without torch; calibration data of a family. Small images, no model, no server."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from superserve.errors import ConfigError, InvalidInputError
from superserve.models.contract import InputSpec
from superserve.server import images as images_mod
from superserve.server.codec import (
    Decoded,
    ModelIO,
    decode_http,
    encode_http,
    request_images,
)
from superserve.server.images import decode_image, decode_images_async, serialize_bytes, top_k

SPEC = InputSpec(3, 32, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), resize=36,
                 labels=tuple(f"c{i}" for i in range(10)), num_classes=10)
IO = ModelIO.for_input(SPEC, max_images=4)


def encode(a: np.ndarray, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt, **kw)
    return buf.getvalue()


def solid(w: int, h: int, rgb=(255, 0, 0)) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def png_claiming(w: int, h: int) -> bytes:
    """A valid 1x1 PNG whose header says w x h (a decompression bomb's header, nothing more)."""
    raw = encode(solid(1, 1), "PNG")
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + \
        raw[8 + 25:]


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_resizes_crops_and_scales_to_the_input_contract(fmt):
    x = decode_image(encode(solid(64, 48, (255, 0, 0)), fmt, **({"quality": 95} if fmt ==
                                                                "JPEG" else {})), SPEC)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert x[0].mean() > 0.95 and x[1].mean() < 0.05 and x[2].mean() < 0.05  # RGB order kept
    grey = decode_image(encode(np.full((20, 30), 128, dtype=np.uint8), "PNG"), SPEC)
    assert grey.shape == (3, 32, 32) and np.allclose(grey, 128 / 255, atol=1e-6)


def test_server_and_profiler_decode_the_same_pixels(tmp_path):
    """One preprocessing for the profile's image folder and the server's image input."""
    from superserve.models.imagefolder import decode_image as decode_file

    a = np.random.default_rng(0).integers(0, 256, (75, 100, 3), dtype=np.uint8)
    data = encode(a, "JPEG", quality=90)
    (tmp_path / "x.jpg").write_bytes(data)
    s = SPEC
    assert np.array_equal(decode_image(data, s),
                          decode_file(tmp_path / "x.jpg", 3, s.height, s.width, s.resize))


def test_only_the_crop_is_resampled_as_resize_then_crop_would():
    from superserve.models.preprocess import to_array

    a = np.random.default_rng(1).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    scale = 36 / 90
    rw, rh = max(32, round(160 * scale)), max(32, round(90 * scale))
    full = im.resize((rw, rh), Image.BILINEAR)
    left, top = (rw - 32) // 2, (rh - 32) // 2
    ref = np.asarray(full.crop((left, top, left + 32, top + 32)), np.float32) / 255
    got = to_array(im, 3, 32, 32, 36)
    assert np.abs(got.transpose(1, 2, 0) - ref).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("data,words", [
    (b"", "is empty"),
    (b"hello, not an image", "not a JPEG or PNG"),
    (b"GIF89a" + b"\0" * 40, "not a JPEG or PNG"),
    (b"\xff\xd8\xff\xe0" + b"\0" * 30, "not a valid JPEG"),
])
def test_not_an_image_is_a_client_error(data, words):
    with pytest.raises(InvalidInputError, match=words):
        decode_image(data, SPEC, index=0)


def test_truncated_and_corrupt_images_are_client_errors():
    jpeg = encode(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="image 3 is not a valid JPEG"):
        decode_image(jpeg[: len(jpeg) // 2], SPEC, index=3)
    png = bytearray(encode(np.random.default_rng(1).integers(0, 256, (40, 40, 3), np.uint8),
                           "PNG"))
    at = png.index(b"IDAT") + 4
    png[at:at + 16] = b"\xff" * 16  # the compressed data's start
    with pytest.raises(InvalidInputError, match="not a valid PNG"):
        decode_image(bytes(png), SPEC)


def test_a_decompression_bomb_is_refused_from_its_header():
    for side in (7_000, 60_000):  # 49 M (our bound), 3.6 G pixels (Pillow's too) in ~70 bytes
        with pytest.raises(InvalidInputError, match="larger than the limit"):
            decode_image(png_claiming(side, side), SPEC)
    with pytest.raises(InvalidInputError, match="larger than the limit of 100 pixels"):
        decode_image(encode(solid(20, 20), "PNG"), SPEC, max_pixels=100)


def test_decoding_runs_off_the_event_loop(monkeypatch):
    seen = []
    real = images_mod.decode_image

    def spy(*a, **k):
        seen.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(images_mod, "decode_image", spy)
    x = asyncio.run(decode_images_async([encode(solid(40, 30))] * 2, SPEC))
    assert x.shape == (2, 3, 32, 32)
    assert seen and all(n.startswith("superserve-offload") for n in seen)


# ----------------------------------------------------------------------------- the codec
def body(items, **tensor_kw):
    t = {"name": "image", "datatype": "BYTES", "shape": [len(items)],
         "parameters": {"content_type": "base64"},
         "data": [base64.b64encode(b).decode() for b in items], **tensor_kw}
    return json.dumps({"inputs": [t]}).encode()


def test_json_base64_and_binary_extension_carry_encoded_images():
    jpegs = [encode(solid(40, 30, (0, 0, 255))), encode(solid(30, 40, (0, 255, 0)), "PNG")]
    d = decode_http(body(jpegs), None, IO)
    assert d.images is None and d.encoded == jpegs
    x = asyncio.run(request_images(d, IO))
    assert x.shape == (2, 3, 32, 32) and x[0, 2].mean() > 0.9 and x[1, 1].mean() > 0.9
    raw = serialize_bytes(np.array(jpegs, dtype=object))
    head = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2, 1],
                                   "parameters": {"binary_data_size": len(raw)}}]}).encode()
    d2 = decode_http(head + raw, str(len(head)), IO)
    assert d2.encoded == jpegs


@pytest.mark.parametrize("mutate,words", [
    (lambda t: t["parameters"].pop("content_type"), "content_type"),
    (lambda t: t.update(data=["%%%"]), "not valid base64"),
    (lambda t: t.update(data=[1]), "not a base64 string"),
    (lambda t: t.update(shape=[2]), "needs 2"),
    (lambda t: t.update(shape=[1, 1, 3]), "expected \\[N\\]"),
    (lambda t: t.update(shape=[9], data=["AA=="] * 9), "limit of 4"),
    (lambda t: t.update(datatype="FP32"), "datatype is BYTES"),
    (lambda t: t.update(name="input"), "send encoded images as the BYTES input 'image'"),
])
def test_malformed_image_tensors_are_client_errors(mutate, words):
    t = json.loads(body([encode(solid(8, 8))]))["inputs"][0]
    mutate(t)
    with pytest.raises(InvalidInputError, match=words):
        decode_http(json.dumps({"inputs": [t]}).encode(), None, IO)


def test_binary_bytes_framing_is_checked_exactly():
    raw = serialize_bytes(np.array([b"abc"], dtype=object))
    for extra, words in ((b"x", "1 bytes follow"), (b"", None)):
        payload = raw + extra
        head = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                       "parameters": {"binary_data_size": len(payload)}}]}
                          ).encode()
        if words is None:
            assert decode_http(head + payload, str(len(head)), IO).encoded == [b"abc"]
        else:
            with pytest.raises(InvalidInputError, match=words):
                decode_http(head + payload, str(len(head)), IO)
    head = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                   "parameters": {"binary_data_size": 6}}]}).encode()
    with pytest.raises(InvalidInputError, match="declares 100 bytes"):
        decode_http(head + struct.pack("<I", 100) + b"ab", str(len(head)), IO)


def test_a_model_without_an_input_contract_takes_fp32_only():
    with pytest.raises(InvalidInputError, match="unknown input name 'image'"):
        decode_http(body([b"x"]), None, ModelIO())


# ----------------------------------------------------------------------------- top-k
def test_classification_extension_top_k_with_labels():
    logits = np.array([[0.1, 3.0, -1.0, 3.0], [5.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    out = top_k(logits, 2, ["a", "b", "c", "d"])
    assert out.shape == (2, 2)
    assert out.tolist() == [[b"3.000000:1:b", b"3.000000:3:d"], [b"5.000000:0:a", b"1.000000:3:d"]]
    assert top_k(logits, 9).shape == (2, 4) and top_k(logits, 1)[0, 0] == b"3.000000:1"


def test_classification_request_and_json_response():
    req = json.loads(body([encode(solid(8, 8))]))
    req["outputs"] = [{"name": "logits", "parameters": {"classification": 3}}, {"name": "predicted"}]
    d = decode_http(json.dumps(req).encode(), None, IO)
    assert d.classification == {"logits": 3}

    class R:
        logits = np.arange(10, dtype=np.float32)[None]
        subnet_id, subnet_accuracy, batch_size, queue_s, service_s, deadline_met = 1, .9, 1, 0, 0, True

    d.images = np.zeros((1, 3, 32, 32), np.float32)
    out = json.loads(encode_http(d, R(), "m", IO)[0])["outputs"]
    assert out[0] == {"name": "logits", "datatype": "BYTES", "shape": [1, 3],
                      "data": ["9.000000:9:c9", "8.000000:8:c8", "7.000000:7:c7"]}
    assert out[1]["data"] == [9]
    for bad, words in ((11, "has 10 classes"), (-1, "non-negative"), ("x", "non-negative")):
        req["outputs"] = [{"name": "logits", "parameters": {"classification": bad}}]
        with pytest.raises(InvalidInputError, match=words):
            decode_http(json.dumps(req).encode(), None, IO)
    req["outputs"] = [{"name": "predicted", "parameters": {"classification": 2}}]
    with pytest.raises(InvalidInputError, match="offered on output 'logits'"):
        decode_http(json.dumps(req).encode(), None, IO)


def test_decoded_defaults_keep_fp32_requests_unchanged():
    assert Decoded(np.zeros((1, 1, 28, 28), np.float32), None).classification == {}


# ----------------------------------------------------------------------------- contract
def test_family_input_contract_without_torch():
    code = ("import sys; from superserve.models.registry import model_input_spec as m; "
            "s = m('ofa_mbv3'); r = m('resnet'); "
            "print(s.shape, s.resize, s.num_classes, r.shape, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["(3,", "224,", "224)", "256", "1000", "(1,", "28,", "28)", "False"]


@pytest.mark.parametrize("family", ["ofa_mbv3", "ofa_resnet50", "resnet", "vit"])
def test_declared_input_contract_is_the_built_models(family):
    from superserve.models import build_supernet, get_family

    assert get_family(family).input_spec({}) == build_supernet(family).input_spec


def test_a_family_without_calibration_data_refuses_clearly():
    from superserve.runtime.runners import _calibration_images

    class Net:
        family = "ofa_mbv3"

    with pytest.raises(ConfigError, match="superserve profile --model ofa_mbv3"):
        _calibration_images(Net(), None, 3)


def test_grpc_bytes_contents_and_raw_form():
    from superserve.server import proto
    from superserve.server.codec import decode_grpc_images

    pb = proto.pb2()
    jpegs = [encode(solid(20, 10)), encode(solid(10, 20), "PNG")]
    req = pb.ModelInferRequest(model_name="m")
    t = req.inputs.add(name="image", datatype="BYTES", shape=[2])
    t.contents.bytes_contents.extend(jpegs)
    assert decode_grpc_images(req, IO) == jpegs
    req.raw_input_contents.append(serialize_bytes(np.array(jpegs, dtype=object)))
    with pytest.raises(InvalidInputError, match="send one"):
        decode_grpc_images(req, IO)
    del t.contents.bytes_contents[:]
    assert decode_grpc_images(req, IO) == jpegs
    t.contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInputError, match="fp32_contents given for a BYTES input"):
        decode_grpc_images(req, IO)


def test_mutated_images_decode_or_are_client_errors():
    """Seeded byte mutations of JPEGs and PNGs of several modes: an image or InvalidInputError
    (never another exception: that would be a 500)."""
    import random

    rng = random.Random(0)
    a = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    seeds = [encode(a), encode(a, "JPEG", progressive=True), encode(a, "PNG")]
    for mode in ("P", "RGBA", "L", "I;16", "1"):
        buf = io.BytesIO()
        Image.fromarray(a).convert(mode).save(buf, format="PNG")
        seeds.append(buf.getvalue())
    for _ in range(300):
        d = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            p = rng.randrange(len(d))
            op = rng.random()
            if op < 0.5:
                d[p] = rng.randrange(256)
            elif op < 0.75:
                del d[p:p + rng.randint(1, 20)]
            else:
                d[p:p] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        try:
            x = decode_image(bytes(d), SPEC)
        except InvalidInputError:
            continue
        assert x.shape == (3, 32, 32) and np.isfinite(x).all()
