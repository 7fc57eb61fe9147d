"""KServe v2 payloads <-> numpy, shared by the REST and gRPC front ends.

Input: one FP32 tensor named `input`, shape [N, C, H, W] (the model's image shape, e.g.
[N, 1, 28, 28]), pixel values in [0, 1]. Each of the N images is one job for the scheduler;
the request is answered when all of its images are done.
Outputs: `logits` FP32 [N, K] and `predicted` INT64 [N] (argmax of the logits).
SLO: request parameter `slo_ms` (milliseconds), or Triton's `timeout` (microseconds);
otherwise the server default. Everything wrong with a payload raises InvalidInputError with a
message naming the field and value; the edge maps it to HTTP 400 / gRPC INVALID_ARGUMENT.

Validation is one path for all three encodings (JSON `data`, the binary extension, gRPC):
`check_shape` bounds the declared shape (and so the element count) before any value is
converted, the values are checked element-wise (numbers only: a string or a boolean inside FP32
data is an error, never coerced), and `check_images` checks count and finiteness. Sizes are
bounded before parsing: the body (the front ends), JSON nesting depth (a vectorised scan that
skips strings, before `json.loads`), integer literals (digits), content decoding (bounded
output). See docs/serving.md, "Hardening".
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superserve.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedEncodingError,
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


def _positive(name: str, v: Any, unit: str, scale: float, max_s: float) -> float:
    """A positive, finite duration in seconds from a number of `unit`s (x `scale`)."""
    raw = v
    if isinstance(v, str) and len(v) <= 64:  # some clients (tritonclient.http) send only
        try:                                 # int/bool/str
            v = float(v)
        except ValueError:
            pass
    ok = not isinstance(v, bool) and isinstance(v, (int, float))
    if ok:
        try:
            v = float(v) * scale  # a huge int overflows here, not later
        except OverflowError:
            ok = False
    if not ok or not (math.isfinite(v) and v > 0):
        raise InvalidInputError(f"parameter {name} must be a positive number of {unit}, "
                                f"got {_short(raw)}")
    if v > max_s:
        raise InvalidInputError(f"parameter {name}={_short(raw)} {unit} is longer than the "
                                f"limit of {max_s:g} s")
    return v


def parse_slo_s(params: Mapping[str, Any], max_s: float = 3600.0) -> float | None:
    """`slo_ms` (ms) wins over Triton's `timeout` (us); both must be positive and finite."""
    if "slo_ms" in params:
        return _positive("slo_ms", params["slo_ms"], "milliseconds", 1e-3, max_s)
    if "timeout" in params:
        return _positive("timeout", params["timeout"], "microseconds", 1e-6, max_s)
    return None


def _short(v: Any, n: int = 80) -> str:
    """repr(v), cut to n characters (messages never echo a whole payload)."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 200:
        return f"<integer of ~{int(v.bit_length() * 0.30103)} digits>"
    r = repr(v) if not isinstance(v, (list, dict)) or len(v) < 16 else \
        f"<{type(v).__name__} of {len(v)} items>"
    return r if len(r) <= n else r[:n - 3] + "..."


def _flag(name: str, v: Any) -> bool:
    """A boolean parameter: JSON true/false (or the strings "true"/"false"), nothing else;
    "false" is false, not a truthy string."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise InvalidInputError(f"parameter {name} must be a boolean, got {_short(v)}")


def check_shape(shape: Any, io: ModelIO) -> list[int]:
    """The declared input shape against the model's metadata, before any value is read: its
    product bounds how many elements the payload may hold."""
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise InvalidInputError(f"input shape must be a list of integers, got {_short(shape)}")
    shape = list(shape)
    if len(shape) != 4 or list(shape[1:]) != list(io.image_shape):
        raise InvalidInputError(
            f"input shape {_short(shape)} is wrong: expected "
            f"[N, {', '.join(map(str, io.image_shape))}]")
    n = shape[0]
    if n < 1:
        raise InvalidInputError(f"input shape {shape} is wrong: N must be >= 1")
    if n > io.max_images:
        raise InvalidInputError(
            f"input has N={n} images, more than the limit of {io.max_images} per request")
    return shape


def check_images(arr: np.ndarray, shape: Sequence[int], io: ModelIO) -> np.ndarray:
    """Validate a decoded FP32 tensor against its declared shape and the model's input."""
    shape = check_shape(shape, io)
    if arr.size != math.prod(shape):
        raise InvalidInputError(
            f"input has {arr.size} values but shape {shape} needs {math.prod(shape)}")
    arr = arr.reshape(shape)
    if arr.dtype != np.float32:  # from JSON numbers: float64, so |x| > FP32 max is seen here
        with np.errstate(over="ignore", invalid="ignore"):
            big = int((np.abs(arr) > np.finfo(np.float32).max).sum())
        if big:
            raise InvalidInputError(f"input has {big} values outside the FP32 range")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise InvalidInputError(f"input has {bad} non-finite values (NaN or Inf)")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_tensor_header(t: Any, io: ModelIO) -> list[int]:
    if not isinstance(t, Mapping):
        raise InvalidInputError(f"each entry of `inputs` must be an object, got {_short(t)}")
    name = t.get("name")
    if name != INPUT_NAME:
        raise InvalidInputError(f"unknown input name {_short(name)}; this model takes "
                                f"{INPUT_NAME!r}")
    dt = t.get("datatype")
    if dt != "FP32":
        raise InvalidInputError(f"input datatype {_short(dt)} is not supported; send FP32")
    return check_shape(t.get("shape"), io)


def _requested_outputs(outputs: Any, default_binary: bool) -> tuple[list[str], dict[str, bool]]:
    if outputs is None:
        return list(OUTPUTS), {o: default_binary for o in OUTPUTS}
    if not isinstance(outputs, list):
        raise InvalidInputError(f"`outputs` must be a list, got {_short(outputs)}")
    names, binary = [], {}
    for o in outputs:
        if not isinstance(o, Mapping):
            raise InvalidInputError(f"each entry of `outputs` must be an object, got "
                                    f"{_short(o)}")
        name = o.get("name")
        if not isinstance(name, str) or name not in OUTPUTS:
            raise InvalidInputError(f"unknown output {_short(name)}; this model has "
                                    f"{list(OUTPUTS)}")
        if name in binary:
            raise InvalidInputError(f"output {name!r} is requested twice")
        p = o.get("parameters")
        if p is None:
            p = {}
        if not isinstance(p, Mapping):
            raise InvalidInputError(f"parameters of output {name!r} must be an object, got "
                                    f"{_short(p)}")
        if p.get("classification"):
            raise InvalidInputError("the classification extension is not supported; "
                                    "read the `predicted` output")
        names.append(name)
        binary[name] = _flag(f"binary_data of output {name!r}", p["binary_data"]) \
            if "binary_data" in p else default_binary
    return names, binary


def decode_content(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent, undone of its `Content-Encoding` (gzip, deflate, identity; a list is
    undone last-applied first). The decoded size is bounded by `limit` while decoding, so a
    small compressed bomb costs nothing. Unknown encodings: UnsupportedEncodingError (415);
    a corrupt stream: InvalidInputError (400)."""
    if encoding is None:
        return body
    codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
    if len(codings) > 2:
        raise UnsupportedEncodingError(f"Content-Encoding {encoding[:80]!r}: at most two "
                                       "codings are accepted")
    for c in reversed(codings):
        if c == "identity":
            continue
        if c in ("gzip", "x-gzip"):
            wbits = 16 + zlib.MAX_WBITS
        elif c == "deflate":
            wbits = zlib.MAX_WBITS  # "deflate" is the zlib format (RFC 9110)
        else:
            raise UnsupportedEncodingError(
                f"Content-Encoding {c[:40]!r} is not supported; send identity, gzip or deflate")
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(body, limit + 1)
            if len(out) > limit or d.unconsumed_tail:
                raise PayloadTooLargeError(f"request payload decodes ({c}) to more than the "
                                           f"limit of {limit} bytes")
            out += d.flush()
        except zlib.error as e:
            raise InvalidInputError(f"request body is not valid {c} data: {e}") from None
        if not d.eof or d.unused_data:
            raise InvalidInputError(f"request body is not valid {c} data: the stream is "
                                    "truncated or followed by other bytes")
        body = out
    return body


def _json_depth_over(head: bytes, limit: int) -> bool:
    """True when the JSON text nests arrays/objects deeper than `limit`, brackets inside
    strings ignored. Vectorised, so a 16 MiB body costs milliseconds; skipped when the text
    has too few brackets to nest that deep (every usual request)."""
    if head.count(b"[") + head.count(b"{") <= limit:
        return False
    a = np.frombuffer(head, dtype=np.uint8)
    n = len(a)
    idx = np.arange(n)
    # a quote is escaped when the run of backslashes just before it has odd length
    last_plain = np.maximum.accumulate(np.where(a != 92, idx, -1))  # last non-backslash <= i
    run_before = np.empty(n, dtype=np.int64)
    run_before[0] = 0
    run_before[1:] = idx[:-1] - last_plain[:-1]
    quote = (a == 34) & (run_before % 2 == 0)
    in_string = (np.cumsum(quote) % 2).astype(bool)  # a closing quote reads as outside
    step = ((a == 91) | (a == 123)).astype(np.int8) - ((a == 93) | (a == 125)).astype(np.int8)
    step[in_string] = 0
    return bool(np.cumsum(step, dtype=np.int64).max() > limit)


def _loads(head: bytes, io: ModelIO) -> Any:
    if _json_depth_over(head, io.max_json_depth):
        raise InvalidInputError(f"request JSON nests deeper than the limit of "
                                f"{io.max_json_depth} levels")
    digits = io.max_int_digits

    def bounded_int(text: str) -> int:
        n = len(text.lstrip("-"))
        if n > digits:
            raise InvalidInputError(f"request JSON has an integer of {n} digits; the limit "
                                    f"is {digits}")
        return int(text)

    try:
        return json.loads(head, parse_int=bounded_int)
    except InvalidInputError:
        raise
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InvalidInputError(f"request body is not valid JSON: {str(e)[:200]}") from None
    except RecursionError:  # unreachable past the depth scan; kept as a guard
        raise InvalidInputError("request JSON nests too deeply") from None


_NUMBER_TYPES = frozenset((int, float))  # bool is not int here: type(), not isinstance


def _json_values(data: Any, shape: list[int]) -> np.ndarray:
    """JSON `data` (flat, or nested as `shape`) -> float64 array, element-wise typed: every
    leaf must be a JSON number; strings, booleans and nulls are errors, never coerced."""
    want = math.prod(shape)
    if not isinstance(data, list):
        raise InvalidInputError(f"input `data` must be a list of numbers, got {_short(data)}")
    flat = data
    depth = 0
    while flat and type(flat[0]) is list:  # nested: one level per dimension, all lists
        depth += 1
        if depth >= len(shape):
            raise InvalidInputError(f"input `data` nests deeper than its shape {shape}")
        if len(flat) > want or any(type(x) is not list for x in flat):
            raise InvalidInputError("input `data` mixes lists and numbers at one level")
        flat = [x for sub in flat for x in sub]
    if len(flat) != want:
        raise InvalidInputError(f"input has {len(flat)} values but shape {shape} needs {want}")
    types = set(map(type, flat))
    if not types <= _NUMBER_TYPES:
        i, bad = next((i, x) for i, x in enumerate(flat) if type(x) not in _NUMBER_TYPES)
        kind = {bool: "a boolean", str: "a string", type(None): "null", list: "a list",
                dict: "an object"}.get(type(bad), type(bad).__name__)
        raise InvalidInputError(f"input `data` of datatype FP32 holds {kind} at flat index "
                                f"{i} ({_short(bad, 40)}); every element must be a number")
    return np.array(flat, dtype=np.float64)


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
    req = _loads(head, io)
    if not isinstance(req, dict):
        raise InvalidInputError("request body must be a JSON object")
    params = req.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidInputError(f"`parameters` must be an object, got {_short(params)}")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InvalidInputError(f"`inputs` must be a list with exactly one tensor "
                                f"named {INPUT_NAME!r}")
    t = inputs[0]
    shape = _check_tensor_header(t, io)
    tparams = t.get("parameters")
    if tparams is None:
        tparams = {}
    if not isinstance(tparams, Mapping):
        raise InvalidInputError(f"parameters of input {INPUT_NAME!r} must be an object, got "
                                f"{_short(tparams)}")
    if "binary_data_size" in tparams:
        size = tparams["binary_data_size"]
        if "data" in t:
            raise InvalidInputError("input has both `data` and binary_data_size; send one")
        if type(size) is not int or size != len(rest):
            raise InvalidInputError(f"input binary_data_size={_short(size)} but {len(rest)} "
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
        arr = _json_values(t["data"], shape)
    images = check_images(arr, shape, io)
    default_binary = _flag("binary_data_output", params["binary_data_output"]) \
        if "binary_data_output" in params else False
    names, binary = _requested_outputs(req.get("outputs"), default_binary)
    rid = req.get("id", "")
    if rid is None:
        rid = ""
    if not isinstance(rid, str) or len(rid) > io.max_id_chars:
        raise InvalidInputError(f"request `id` must be a string of at most {io.max_id_chars} "
                                f"characters, got {_short(rid)}")
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
        raise InvalidInputError(f"unknown input name {_short(t.name)}; this model takes "
                                f"{INPUT_NAME!r}")
    if t.datatype != "FP32":
        raise InvalidInputError(f"input datatype {_short(t.datatype)} is not supported; "
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
