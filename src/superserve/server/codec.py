"""KServe v2 payloads <-> numpy, shared by the REST and gRPC front ends.

Input: one FP32 tensor named `input`, shape [N, C, H, W] (the model's image shape, e.g.
[N, 1, 28, 28]), pixel values in [0, 1]. Each of the N images is one job for the scheduler;
the request is answered when all of its images are done.
Outputs: `logits` FP32 [N, K] and `predicted` INT64 [N] (argmax of the logits).
SLO: request parameter `slo_ms` (milliseconds), or Triton's `timeout` (microseconds);
otherwise the server default. Everything wrong with a payload raises InvalidInputError with a
message naming the field and value; the edge maps it to HTTP 400 / gRPC INVALID_ARGUMENT.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superserve.errors import InvalidInputError

__all__ = [
    "INPUT_NAME",
    "OUTPUTS",
    "Decoded",
    "ModelIO",
    "check_images",
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

    def input_shape(self) -> list[int]:
        return [-1, *self.image_shape]


@dataclass
class Decoded:
    images: np.ndarray  # float32 [N, C, H, W]
    slo_s: float | None  # from the request, None: the server default
    request_id: str = ""
    outputs: list[str] = field(default_factory=lambda: list(OUTPUTS))
    binary: dict[str, bool] = field(default_factory=dict)  # output name -> binary (HTTP)


def _positive(name: str, v: Any, unit: str) -> float:
    if isinstance(v, str):  # some clients (tritonclient.http) send only int/bool/str
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
        raise InvalidInputError(f"parameter {name} must be a positive number of {unit}, "
                                f"got {v!r}")
    return float(v)


def parse_slo_s(params: Mapping[str, Any]) -> float | None:
    """`slo_ms` (ms) wins over Triton's `timeout` (us); both must be positive and finite."""
    if "slo_ms" in params:
        return _positive("slo_ms", params["slo_ms"], "milliseconds") / 1e3
    if "timeout" in params:
        return _positive("timeout", params["timeout"], "microseconds") / 1e6
    return None


def check_images(arr: np.ndarray, shape: Sequence[int], io: ModelIO) -> np.ndarray:
    """Validate a decoded FP32 tensor against its declared shape and the model's input."""
    shape = list(shape)
    if len(shape) != 4 or list(shape[1:]) != list(io.image_shape):
        raise InvalidInputError(
            f"input shape {shape} is wrong: expected [N, {', '.join(map(str, io.image_shape))}]")
    n = shape[0]
    if n < 1:
        raise InvalidInputError(f"input shape {shape} is wrong: N must be >= 1")
    if n > io.max_images:
        raise InvalidInputError(
            f"input has N={n} images, more than the limit of {io.max_images} per request")
    if arr.size != math.prod(shape):
        raise InvalidInputError(
            f"input has {arr.size} values but shape {shape} needs {math.prod(shape)}")
    arr = arr.reshape(shape)
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InvalidInputError(f"input has {bad} non-finite values (NaN or Inf)")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_tensor_header(t: Any, io: ModelIO) -> list[int]:
    if not isinstance(t, Mapping):
        raise InvalidInputError(f"each entry of `inputs` must be an object, got {t!r:.80}")
    name = t.get("name")
    if name != INPUT_NAME:
        raise InvalidInputError(f"unknown input name {name!r}; this model takes {INPUT_NAME!r}")
    dt = t.get("datatype")
    if dt != "FP32":
        raise InvalidInputError(f"input datatype {dt!r} is not supported; send FP32")
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise InvalidInputError(f"input shape must be a list of integers, got {shape!r:.80}")
    return shape


def _requested_outputs(outputs: Any, default_binary: bool) -> tuple[list[str], dict[str, bool]]:
    if outputs is None:
        return list(OUTPUTS), {o: default_binary for o in OUTPUTS}
    if not isinstance(outputs, list):
        raise InvalidInputError(f"`outputs` must be a list, got {outputs!r:.80}")
    names, binary = [], {}
    for o in outputs:
        name = o.get("name") if isinstance(o, Mapping) else None
        if name not in OUTPUTS:
            raise InvalidInputError(f"unknown output {name!r}; this model has {list(OUTPUTS)}")
        p = o.get("parameters") or {}
        names.append(name)
        binary[name] = bool(p.get("binary_data", default_binary)) if isinstance(p, Mapping) \
            else default_binary
    return names, binary


def decode_http(body: bytes, header_length: str | None, io: ModelIO) -> Decoded:
    """A REST infer body: JSON, optionally followed by binary tensor data (the binary-data
    extension: the JSON's length in the Inference-Header-Content-Length header)."""
    if header_length is not None:
        try:
            hlen = int(header_length)
        except ValueError:
            raise InvalidInputError(
                f"Inference-Header-Content-Length={header_length!r} is not an integer") from None
        if not 0 < hlen <= len(body):
            raise InvalidInputError(f"Inference-Header-Content-Length={hlen} does not fit a "
                                    f"body of {len(body)} bytes")
        head, rest = body[:hlen], body[hlen:]
    else:
        head, rest = body, b""
    try:
        req = json.loads(head)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"request body is not valid JSON: {e}") from None
    if not isinstance(req, dict):
        raise InvalidInputError("request body must be a JSON object")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidInputError(f"`parameters` must be an object, got {params!r:.80}")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InvalidInputError(f"`inputs` must be a list with exactly one tensor "
                                f"named {INPUT_NAME!r}")
    t = inputs[0]
    shape = _check_tensor_header(t, io)
    tparams = t.get("parameters") or {}
    if isinstance(tparams, Mapping) and "binary_data_size" in tparams:
        size = tparams["binary_data_size"]
        if not isinstance(size, int) or size != len(rest):
            raise InvalidInputError(f"input binary_data_size={size!r} but {len(rest)} bytes of "
                                    "binary data follow the JSON header")
        if size % 4:
            raise InvalidInputError(f"binary FP32 data of {size} bytes is not a multiple of 4")
        arr = np.frombuffer(rest, dtype="<f4")
    else:
        if "data" not in t:
            raise InvalidInputError("input has neither `data` nor binary_data_size")
        try:
            arr = np.asarray(t["data"], dtype=np.float32).ravel()
        except (TypeError, ValueError) as e:
            raise InvalidInputError(f"input `data` is not a (nested) list of numbers: {e}") \
                from None
    images = check_images(arr, shape, io)
    names, binary = _requested_outputs(req.get("outputs"),
                                       bool(params.get("binary_data_output", False)))
    rid = req.get("id", "")
    return Decoded(images, parse_slo_s(params), str(rid) if rid is not None else "", names,
                   binary)


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
    head = json.dumps(resp).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    return head + b"".join(chunks), {"content-type": "application/octet-stream",
                                     "Inference-Header-Content-Length": str(len(head))}
