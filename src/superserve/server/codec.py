"""KServe v2 payloads <-> numpy, shared by the REST and gRPC front ends.

Input: one FP32 tensor named `input`, shape [N, C, H, W] (the model's image shape, e.g.
[N, 1, 28, 28]), pixel values in [0, 1]. Each of the N images is one job for the scheduler;
the request is answered when all of its images are done.
Outputs: `logits` FP32 [N, K] and `predicted` INT64 [N] (argmax of the logits).
SLO: request parameter `slo_ms` (milliseconds), or Triton's `timeout` (microseconds);
otherwise the server default. Everything wrong with a payload raises InvalidInputError with a
message naming the field and value; the edge maps it to HTTP 400 / gRPC INVALID_ARGUMENT.

Validation is one path for all three encodings (JSON `data`, the binary extension, gRPC), in
server/validation.py: `check_shape` bounds the declared shape (and so the element count) before
any value is converted, the values are checked element-wise (numbers only: a string or a
boolean inside FP32 data is an error, never coerced), and `check_images` checks count and
finiteness. Sizes are bounded before parsing: the body (the front ends), JSON nesting depth (a
vectorised scan that skips strings, before `json.loads`), integer literals (digits), content
decoding (bounded output). See docs/serving.md, "Hardening".
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superserve.errors import InvalidInputError
from superserve.server.validation import (
    check_images,
    check_shape,
    decode_content,
    flag,
    json_values,
    loads_bounded,
    parse_slo_s,
    short,
)

__all__ = [
    "INPUT_NAME",
    "OUTPUTS",
    "Decoded",
    "ModelIO",
    "check_images",
    "check_shape",
    "decode_content",
    "decode_grpc_images",
    "decode_http",
    "encode_http",
    "output_arrays",
    "parse_slo_s",
    "result_parameters",
]

INPUT_NAME = "input"
OUTPUTS = ("logits", "predicted")
HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True)
class ModelIO:
    """What the served model accepts: the image shape and the request bounds."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # C, H, W
    num_classes: int = 10
    max_images: int = 256  # N of one request
    max_slo_s: float = 3600.0  # a longer slo_ms / timeout / gRPC deadline is refused
    max_json_depth: int = 32  # nesting of the JSON header (a request needs ~8)
    max_int_digits: int = 19  # integer literals in JSON (int64 range)
    max_id_chars: int = 1024  # request `id`

    def input_shape(self) -> list[int]:
        return [-1, *self.image_shape]


@dataclass
class Decoded:
    images: np.ndarray  # float32 [N, C, H, W]
    slo_s: float | None  # from the request, None: the server default
    request_id: str = ""
    outputs: list[str] = field(default_factory=lambda: list(OUTPUTS))
    binary: dict[str, bool] = field(default_factory=dict)  # output name -> binary (HTTP)


def _check_tensor_header(t: Any, io: ModelIO) -> list[int]:
    if not isinstance(t, Mapping):
        raise InvalidInputError(f"each entry of `inputs` must be an object, got {short(t)}")
    name = t.get("name")
    if name != INPUT_NAME:
        raise InvalidInputError(f"unknown input name {short(name)}; this model takes "
                                f"{INPUT_NAME!r}")
    dt = t.get("datatype")
    if dt != "FP32":
        raise InvalidInputError(f"input datatype {short(dt)} is not supported; send FP32")
    return check_shape(t.get("shape"), io)


def _parameters(obj: Mapping, what: str) -> Mapping:
    """A tensor's optional `parameters` object ({} when absent)."""
    p = obj.get("parameters")
    if p is None:
        return {}
    if not isinstance(p, Mapping):
        raise InvalidInputError(f"parameters of {what} must be an object, got {short(p)}")
    return p


def _requested_outputs(outputs: Any, default_binary: bool) -> tuple[list[str], dict[str, bool]]:
    if outputs is None:
        return list(OUTPUTS), {o: default_binary for o in OUTPUTS}
    if not isinstance(outputs, list):
        raise InvalidInputError(f"`outputs` must be a list, got {short(outputs)}")
    names, binary = [], {}
    for o in outputs:
        if not isinstance(o, Mapping):
            raise InvalidInputError(f"each entry of `outputs` must be an object, got "
                                    f"{short(o)}")
        name = o.get("name")
        if not isinstance(name, str) or name not in OUTPUTS:
            raise InvalidInputError(f"unknown output {short(name)}; this model has "
                                    f"{list(OUTPUTS)}")
        if name in binary:
            raise InvalidInputError(f"output {name!r} is requested twice")
        p = _parameters(o, f"output {name!r}")
        if p.get("classification"):
            raise InvalidInputError("the classification extension is not supported; "
                                    "read the `predicted` output")
        names.append(name)
        binary[name] = flag(f"binary_data of output {name!r}", p["binary_data"]) \
            if "binary_data" in p else default_binary
    return names, binary


def decode_http(body: bytes, header_length: str | None, io: ModelIO) -> Decoded:
    """A REST infer body: JSON, optionally followed by binary tensor data (the binary-data
    extension: the JSON's length in the Inference-Header-Content-Length header). `body` is
    already undone of its Content-Encoding (`decode_content`)."""
    if header_length is not None:
        h = header_length.strip()
        if not (h.isascii() and h.isdigit() and len(h) <= 12):
            raise InvalidInputError(
                f"Inference-Header-Content-Length={header_length[:40]!r} is not an integer")
        hlen = int(h)
        if not 0 < hlen <= len(body):
            raise InvalidInputError(f"Inference-Header-Content-Length={hlen} does not fit a "
                                    f"body of {len(body)} bytes")
        head, rest = body[:hlen], body[hlen:]
    else:
        head, rest = body, b""
    req = loads_bounded(head, io)
    if not isinstance(req, dict):
        raise InvalidInputError("request body must be a JSON object")
    params = req.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidInputError(f"`parameters` must be an object, got {short(params)}")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InvalidInputError(f"`inputs` must be a list with exactly one tensor "
                                f"named {INPUT_NAME!r}")
    t = inputs[0]
    shape = _check_tensor_header(t, io)
    tparams = _parameters(t, f"input {INPUT_NAME!r}")
    if "binary_data_size" in tparams:
        size = tparams["binary_data_size"]
        if "data" in t:
            raise InvalidInputError("input has both `data` and binary_data_size; send one")
        if type(size) is not int or size != len(rest):
            raise InvalidInputError(f"input binary_data_size={short(size)} but {len(rest)} "
                                    "bytes of binary data follow the JSON header")
        want = math.prod(shape) * 4
        if size != want:
            raise InvalidInputError(f"input binary_data_size={size} but shape {shape} of FP32 "
                                    f"needs {want} bytes")
        arr = np.frombuffer(rest, dtype="<f4")
    else:
        if rest:
            raise InvalidInputError(f"{len(rest)} bytes follow the JSON header but no input "
                                    "declares binary_data_size")
        if "data" not in t:
            raise InvalidInputError("input has neither `data` nor binary_data_size")
        arr = json_values(t["data"], shape)
    images = check_images(arr, shape, io)
    default_binary = flag("binary_data_output", params["binary_data_output"]) \
        if "binary_data_output" in params else False
    names, binary = _requested_outputs(req.get("outputs"), default_binary)
    rid = req.get("id", "")
    if rid is None:
        rid = ""
    if not isinstance(rid, str) or len(rid) > io.max_id_chars:
        raise InvalidInputError(f"request `id` must be a string of at most {io.max_id_chars} "
                                f"characters, got {short(rid)}")
    return Decoded(images, parse_slo_s(params, io.max_slo_s), rid, names, binary)


_CONTENT_FIELDS = ("bool_contents", "int_contents", "int64_contents", "uint_contents",
                   "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents")


def decode_grpc_images(req: Any, io: ModelIO) -> np.ndarray:
    """The images of a gRPC ModelInferRequest (duck-typed protobuf), by the same rules as
    REST: one FP32 input `input`, shape checked before its values are read, raw bytes or
    `fp32_contents` (never both, never another contents field), exact sizes."""
    if len(req.inputs) != 1:
        raise InvalidInputError(f"expected exactly one input tensor named {INPUT_NAME!r}, "
                                f"got {len(req.inputs)}")
    t = req.inputs[0]
    if t.name != INPUT_NAME:
        raise InvalidInputError(f"unknown input name {short(t.name)}; this model takes "
                                f"{INPUT_NAME!r}")
    if t.datatype != "FP32":
        raise InvalidInputError(f"input datatype {short(t.datatype)} is not supported; "
                                "send FP32")
    shape = check_shape(list(t.shape), io)
    want = math.prod(shape)
    others = [f for f in _CONTENT_FIELDS if f != "fp32_contents" and len(getattr(t.contents, f))]
    if others:
        raise InvalidInputError(f"input contents.{others[0]} given for an FP32 input; use "
                                "fp32_contents or raw_input_contents")
    n_fp32 = len(t.contents.fp32_contents)
    if req.raw_input_contents:
        if len(req.raw_input_contents) != 1:
            raise InvalidInputError(f"{len(req.raw_input_contents)} raw_input_contents for one "
                                    "input")
        if n_fp32:
            raise InvalidInputError("input has both contents.fp32_contents and "
                                    "raw_input_contents; send one")
        raw = req.raw_input_contents[0]
        if len(raw) != 4 * want:
            raise InvalidInputError(f"raw FP32 input of {len(raw)} bytes but shape {shape} "
                                    f"needs {4 * want}")
        arr = np.frombuffer(raw, dtype="<f4")
    else:
        if n_fp32 != want:
            raise InvalidInputError(f"input has {n_fp32} values but shape {shape} needs {want}")
        arr = np.asarray(t.contents.fp32_contents, dtype=np.float32)
    return check_images(arr, shape, io)


def output_arrays(logits: np.ndarray) -> dict[str, np.ndarray]:
    return {"logits": np.ascontiguousarray(logits, dtype=np.float32),
            "predicted": np.argmax(logits, axis=1).astype(np.int64)}


def result_parameters(result: Any) -> dict[str, Any]:
    """The response `parameters`: which subnet served, and where the time went."""
    return {"subnet_id": int(result.subnet_id),
            "subnet_accuracy": float(result.subnet_accuracy),
            "batch_size": int(result.batch_size),
            "queue_ms": float(result.queue_s * 1e3),
            "service_ms": float(result.service_s * 1e3),
            "deadline_met": bool(result.deadline_met)}


_DTYPES = {"logits": "FP32", "predicted": "INT64"}

try:  # a declared dependency (~5x faster on a response); the stdlib stays as the fallback
    from orjson import dumps as _dumps
except ImportError:  # pragma: no cover
    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()


def encode_http(decoded: Decoded, result: Any, model: str) -> tuple[bytes, dict[str, str]]:
    """JSON response, with binary outputs appended where requested."""
    arrays = output_arrays(result.logits)
    outs, chunks = [], []
    for name in decoded.outputs:
        a = arrays[name]
        o: dict[str, Any] = {"name": name, "datatype": _DTYPES[name], "shape": list(a.shape)}
        if decoded.binary.get(name, False):
            raw = a.tobytes()
            o["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            o["data"] = a.ravel().tolist()
        outs.append(o)
    resp = {"model_name": model, "model_version": "1", "outputs": outs,
            "parameters": result_parameters(result)}
    if decoded.request_id:
        resp["id"] = decoded.request_id
    head = _dumps(resp)
    if not chunks:
        return head, {"content-type": "application/json"}
    return head + b"".join(chunks), {"content-type": "application/octet-stream",
                                     "Inference-Header-Content-Length": str(len(head))}
