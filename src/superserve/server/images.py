"""Encoded images in requests (JPEG, PNG) -> the model's float32 input, off the event loop;
and the classification extension's top-k output.

A request's BYTES input `image` holds N encoded images (base64 in JSON, raw in the binary
extension, `bytes_contents` or raw on gRPC: `encoded_from_json` / `encoded_from_grpc` /
`deserialize_bytes` unpack them for codec.py). `decode_images` checks and
decodes all N and preprocesses them as the family's InputSpec says (superserve.models.
preprocess: resize, centre crop, [0, 1]; the model normalises), giving the (N, C, H, W) float32
array an FP32 client would have sent, so both kinds of request share the queue and the batches.

It runs on the front end's off-loop pool (`server.offload.run_blocking`): decoding a 500x375
JPEG costs milliseconds, which the event loop, routing every other request, must not pay
(benchmarks/image_decode.py). The request's clock runs meanwhile: the time is the client's.

Checked before anything is decoded: the format by its magic bytes (JPEG, PNG only), the pixel
count from the header (`max_pixels`: a small file claiming a huge image, a decompression bomb,
is refused before a pixel is allocated). A file that fails to decode, or is truncated, is a
client error. Every error names the element: InvalidInputError (HTTP 400, INVALID_ARGUMENT).
"""

from __future__ import annotations

import binascii
import io
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from superserve.errors import InvalidInputError
from superserve.server.validation import check_bytes_shape, short

if TYPE_CHECKING:
    from superserve.server.codec import ModelIO

__all__ = ["DEFAULT_MAX_PIXELS", "FORMATS", "IMAGE_INPUT", "decode_image", "decode_images",
           "decode_images_async", "deserialize_bytes", "encoded_from_grpc", "encoded_from_json",
           "serialize_bytes", "top_k"]

DEFAULT_MAX_PIXELS = 36_000_000  # 6000 x 6000; a 12 MP phone photo is 4000 x 3000
FORMATS = ("JPEG", "PNG")
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))


def _format(data: bytes) -> str | None:
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    return None


def decode_image(data: bytes, spec: Any, max_pixels: int = DEFAULT_MAX_PIXELS,
                 index: int = 0) -> np.ndarray:
    """One encoded image -> (C, H, W) float32 in [0, 1], per `spec` (an InputSpec)."""
    from PIL import Image, UnidentifiedImageError

    from superserve.models.preprocess import to_array

    what = f"image {index}"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"{what} is a {type(data).__name__}, not encoded bytes")
    if len(data) == 0:
        raise InvalidInputError(f"{what} is empty")
    fmt = _format(bytes(data[:8]))
    if fmt is None:
        raise InvalidInputError(f"{what} is not a JPEG or PNG image (it starts with "
                                f"{bytes(data[:8])!r}); send an encoded JPEG or PNG")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as im:
            w, h = im.size  # from the header: nothing is decoded yet
            if w < 1 or h < 1:
                raise InvalidInputError(f"{what}: {fmt} of {w}x{h} pixels has no pixels")
            if w * h > max_pixels:
                raise InvalidInputError(f"{what}: {fmt} of {w}x{h} = {w * h} pixels is larger "
                                        f"than the limit of {max_pixels} pixels (the "
                                        "server's --max-image-pixels)")
            return to_array(im, spec.channels, spec.height, spec.width, spec.resize,
                            spec.interpolation)
    except InvalidInputError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own bound, past ours if raised
        raise InvalidInputError(f"{what} is larger than the limit of {max_pixels} pixels: "
                                f"{e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            MemoryError, IndexError, TypeError, struct.error) as e:
        # Pillow reports a corrupt or truncated file with any of these
        raise InvalidInputError(f"{what} is not a valid {fmt}: {str(e)[:160] or type(e).__name__}"
                                ) from None


def decode_images(items: Sequence[bytes], spec: Any,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """N encoded images -> (N, C, H, W) float32, the first bad one an InvalidInputError."""
    out = np.empty((len(items), *spec.shape), dtype=np.float32)
    for i, data in enumerate(items):
        out[i] = decode_image(data, spec, max_pixels, i)
    return out


async def decode_images_async(items: Sequence[bytes], spec: Any,
                              max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`decode_images` on the off-loop pool (server/offload.py), never on the event loop."""
    from superserve.server.offload import run_blocking

    return await run_blocking(decode_images, items, spec, max_pixels)


def top_k(logits: np.ndarray, k: int, labels: Sequence[str] | None = None) -> np.ndarray:
    """The classification extension: (N, K) scores -> (N, k) object array of
    b"<score>:<index>[:<label>]", best first (ties: the lower index), the score the output's own
    value (as Triton does: the logits, not probabilities)."""
    n, classes = logits.shape
    k = min(k, classes)
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    out = np.empty((n, k), dtype=object)
    for r in range(n):
        for c, j in enumerate(order[r]):
            s = f"{float(logits[r, j]):.6f}:{int(j)}"
            if labels is not None and j < len(labels):
                s += f":{labels[j]}"
            out[r, c] = s.encode()
    return out


# ----------------------------------------------------------------------------- the BYTES input
IMAGE_INPUT = "image"
CONTENT_FIELDS = ("bool_contents", "int_contents", "int64_contents", "uint_contents",
                  "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents")


def encoded_from_json(data: Any, n: int, tparams: Mapping) -> list[bytes]:
    """JSON `data` of the BYTES input: n base64 strings (flat, or [[s], ...])."""
    ct = tparams.get("content_type")
    if ct != "base64":
        raise InvalidInputError(
            f"BYTES input {IMAGE_INPUT!r} in JSON must hold base64 strings and say so: "
            f'"parameters": {{"content_type": "base64"}} (got content_type {short(ct)}); '
            "or send the raw bytes with the binary extension")
    if not isinstance(data, list):
        raise InvalidInputError(f"input `data` must be a list of base64 strings, got "
                                f"{short(data)}")
    if data and all(type(x) is list and len(x) == 1 for x in data):  # shape [N, 1], nested
        data = [x[0] for x in data]
    if len(data) != n:
        raise InvalidInputError(f"input has {len(data)} elements but shape [{n}] needs {n}")
    out = []
    for i, s in enumerate(data):
        if not isinstance(s, str):
            raise InvalidInputError(f"element {i} of input {IMAGE_INPUT!r} is "
                                    f"{short(s, 40)}, not a base64 string")
        try:
            out.append(binascii.a2b_base64(s.encode("ascii"), strict_mode=True))
        except (binascii.Error, UnicodeEncodeError) as e:
            raise InvalidInputError(f"element {i} of input {IMAGE_INPUT!r} is not valid "
                                    f"base64: {e}") from None
    return out


def grpc_payload(req: Any, t: Any, field: str, datatype: str) -> tuple[bytes | None, Any]:
    """The one gRPC input's payload: (raw_input_contents[0], None) or (None, its `field` of
    contents), after the rules both datatypes share: no other contents field, at most one raw
    payload, never both forms."""
    others = [f for f in CONTENT_FIELDS if f != field and len(getattr(t.contents, f))]
    if others:
        raise InvalidInputError(f"input contents.{others[0]} given for a {datatype} input; use "
                                f"{field} or raw_input_contents")
    values = getattr(t.contents, field)
    if not req.raw_input_contents:
        return None, values
    if len(req.raw_input_contents) != 1:
        raise InvalidInputError(f"{len(req.raw_input_contents)} raw_input_contents for one "
                                "input")
    if len(values):
        raise InvalidInputError(f"input has both contents.{field} and raw_input_contents; "
                                "send one")
    return req.raw_input_contents[0], None


def encoded_from_grpc(req: Any, t: Any, io: ModelIO) -> list[bytes]:
    """The BYTES input of a gRPC request (duck-typed protobuf): `bytes_contents`, or the
    length-prefixed form in `raw_input_contents` (tritonclient's), never both."""
    n = check_bytes_shape(list(t.shape), io)[0]
    raw, values = grpc_payload(req, t, "bytes_contents", "BYTES")
    if raw is not None:
        return deserialize_bytes(raw, n, f"input {IMAGE_INPUT!r}")
    items = list(values)
    if len(items) != n:
        raise InvalidInputError(f"input has {len(items)} bytes_contents but shape [{n}] needs "
                                f"{n}")
    return items


def serialize_bytes(a: np.ndarray) -> bytes:
    """BYTES tensor -> the binary form (KServe/Triton): each element as a 4-byte
    little-endian length and its bytes, in row-major order."""
    parts = []
    for v in a.ravel():
        parts.append(len(v).to_bytes(4, "little"))
        parts.append(v)
    return b"".join(parts)


def deserialize_bytes(raw: bytes, n: int, what: str) -> list[bytes]:
    """The binary form of a BYTES tensor of `n` elements (length-prefixed), exact: every byte
    accounted for."""
    out, pos, end = [], 0, len(raw)
    view = memoryview(raw)
    for i in range(n):
        if pos + 4 > end:
            raise InvalidInputError(f"{what}: binary BYTES data ends before element {i} of {n} "
                                    "(each element is a 4-byte little-endian length and its "
                                    "bytes)")
        size = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if pos + size > end:
            raise InvalidInputError(f"{what}: element {i} declares {size} bytes but only "
                                    f"{end - pos} follow")
        out.append(bytes(view[pos:pos + size]))
        pos += size
    if pos != end:
        raise InvalidInputError(f"{what}: {end - pos} bytes follow the {n} elements the shape "
                                "declares")
    return out
