"""KServe v2 payloads <-> numpy, shared by the REST and gRPC front ends.

Input, one of:
- an FP32 tensor named `input`, shape [N, C, H, W] (the model's image shape, e.g.
  [N, 3, 224, 224]), pixel values in [0, 1];
- a BYTES tensor named `image`, shape [N] (or [N, 1]), N encoded JPEG or PNG images: in JSON
  base64 strings with `"parameters": {"content_type": "base64"}` on the input (MLServer's
  convention), raw in the binary extension and on gRPC (`bytes_contents`, or the
  length-prefixed raw form tritonclient sends). Decoded and preprocessed per the family's
  InputSpec off the event loop (server/images.py), into the array an FP32 client would send,
  so both kinds batch together. Offered when the model's input contract is known
  (`ModelIO.input_spec`).
Each of the N images is one job for the scheduler; the request is answered when all of its
images are done.
Outputs: `logits` FP32 [N, K] and `predicted` INT64 [N] (argmax of the logits); `logits` with
`"parameters": {"classification": k}` is the classification extension instead: BYTES [N, k],
each element "<score>:<index>[:<label>]", best first.
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
from superserve.server.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_INPUT,
    decode_images_async,
    deserialize_bytes,
    encoded_from_grpc,
    encoded_from_json,
    grpc_payload,
    serialize_bytes,
    top_k,
)
from superserve.server.validation import (
    check_bytes_shape,
    check_images,
    check_shape,
    decode_content,
    flag,
    json_values,
    loads_bounded,
    may_hold_bools,
    parse_slo_s,
    short,
    split_flat_data,
)

__all__ = [
    "IMAGE_INPUT",
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
    "grpc_outputs",
    "output_arrays",
    "output_tensors",
    "parse_slo_s",
    "request_images",
    "result_parameters",
    "tensor_bytes",
    "undecoded_images",
]

INPUT_NAME = "input"
OUTPUTS = ("logits", "predicted")
HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True)
class ModelIO:
    """What the served model accepts: the image shape and the request bounds."""

    image_shape: tuple[int, int, int] = (1, 28, 28)  # C, H, W
    num_classes: int = 10  # 0: unknown (a family that does not say)
    max_images: int = 256  # N of one request
    max_slo_s: float = 3600.0  # a longer slo_ms / timeout / gRPC deadline is refused
    max_json_depth: int = 32  # nesting of the JSON header (a request needs ~8)
    max_int_digits: int = 19  # integer literals in JSON (int64 range)
    max_id_chars: int = 1024  # request `id`
    # the family's InputSpec (superserve.models.InputSpec): offers the BYTES input `image`
    # (JPEG/PNG, preprocessed as it says) and names the classes; None: FP32 tensors only
    input_spec: Any = None
    max_image_pixels: int = DEFAULT_MAX_PIXELS  # per encoded image, read from its header

    def __post_init__(self) -> None:
        if self.input_spec is not None and tuple(self.input_spec.shape) != self.image_shape:
            raise ValueError(f"image_shape {self.image_shape} is not the input spec's "
                             f"{tuple(self.input_spec.shape)}")

    @classmethod
    def for_input(cls, spec: Any, **kw: Any) -> ModelIO:
        """The IO of a model whose input contract is `spec` (an InputSpec)."""
        kw.setdefault("num_classes", spec.num_classes or len(spec.labels or ()))
        return cls(image_shape=tuple(spec.shape), input_spec=spec, **kw)

    def input_shape(self) -> list[int]:
        return [-1, *self.image_shape]

    @property
    def labels(self) -> tuple[str, ...] | None:
        return None if self.input_spec is None else self.input_spec.labels


@dataclass
class Decoded:
    images: np.ndarray | None  # float32 [N, C, H, W]; None until `encoded` is decoded
    slo_s: float | None  # from the request, None: the server default
    request_id: str = ""
    outputs: list[str] = field(default_factory=lambda: list(OUTPUTS))
    binary: dict[str, bool] = field(default_factory=dict)  # output name -> binary (HTTP)
    encoded: list[bytes] | None = None  # the BYTES input `image`: N encoded images
    classification: dict[str, int] = field(default_factory=dict)  # output name -> top k


async def request_images(x: Decoded | np.ndarray | list[bytes], io: ModelIO) -> np.ndarray:
    """A request's images as the model takes them: an FP32 array as it came, encoded images
    decoded and preprocessed off the event loop (server/images.py)."""
    if isinstance(x, Decoded):
        x = x.images if x.encoded is None else x.encoded
    if isinstance(x, np.ndarray):
        return x
    return await decode_images_async(x, io.input_spec, io.max_image_pixels)


def _inputs_taken(io: ModelIO) -> str:
    if io.input_spec is None:
        return f"{INPUT_NAME!r} (FP32)"
    return f"{INPUT_NAME!r} (FP32) or {IMAGE_INPUT!r} (BYTES: encoded JPEG or PNG images)"


def _input_kind(name: Any, dt: Any, io: ModelIO) -> str:
    """"FP32" or "BYTES" for an input's (name, datatype), or the error saying what is taken."""
    if io.input_spec is not None and name == IMAGE_INPUT:
        if dt != "BYTES":
            raise InvalidInputError(f"input {IMAGE_INPUT!r} carries encoded images: its "
                                    f"datatype is BYTES, got {short(dt)}")
        return "BYTES"
    if name != INPUT_NAME:
        raise InvalidInputError(f"unknown input name {short(name)}; this model takes "
                                f"{_inputs_taken(io)}")
    if dt != "FP32":
        if dt == "BYTES" and io.input_spec is not None:
            raise InvalidInputError(f"input {INPUT_NAME!r} is FP32; send encoded images as "
                                    f"the BYTES input {IMAGE_INPUT!r}")
        raise InvalidInputError(f"input datatype {short(dt)} is not supported; send FP32")
    return "FP32"


def _check_tensor_header(t: Any, io: ModelIO) -> tuple[str, list[int]]:
    if not isinstance(t, Mapping):
        raise InvalidInputError(f"each entry of `inputs` must be an object, got {short(t)}")
    kind = _input_kind(t.get("name"), t.get("datatype"), io)
    shape = t.get("shape")
    return kind, check_bytes_shape(shape, io) if kind == "BYTES" else check_shape(shape, io)


def _parameters(obj: Mapping, what: str) -> Mapping:
    """A tensor's optional `parameters` object ({} when absent)."""
    p = obj.get("parameters")
    if p is None:
        return {}
    if not isinstance(p, Mapping):
        raise InvalidInputError(f"parameters of {what} must be an object, got {short(p)}")
    return p


def _classification(name: str, v: Any, io: ModelIO) -> int:
    """The classification extension's k on output `name` (0: off)."""
    raw = v
    if isinstance(v, str) and v.strip().isdigit() and len(v) <= 12:
        v = int(v)
    if type(v) is not int or v < 0:
        raise InvalidInputError(f"parameter classification of output {name!r} must be a "
                                f"non-negative integer (the top k), got {short(raw)}")
    if v and name != "logits":
        raise InvalidInputError(f"classification is offered on output 'logits', not "
                                f"{name!r}")
    if io.num_classes and v > io.num_classes:
        raise InvalidInputError(f"classification={v} on output {name!r}: the model has "
                                f"{io.num_classes} classes")
    return v


def _requested_outputs(outputs: Any, default_binary: bool, io: ModelIO
                       ) -> tuple[list[str], dict[str, bool], dict[str, int]]:
    if outputs is None:
        return list(OUTPUTS), {o: default_binary for o in OUTPUTS}, {}
    if not isinstance(outputs, list):
        raise InvalidInputError(f"`outputs` must be a list, got {short(outputs)}")
    names, binary, classification = [], {}, {}
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
        k = _classification(name, p["classification"], io) if "classification" in p else 0
        if k:
            classification[name] = k
        names.append(name)
        binary[name] = flag(f"binary_data of output {name!r}", p["binary_data"]) \
            if "binary_data" in p else default_binary
    return names, binary, classification


def undecoded_images(body: bytes, header_length: bytes | None) -> int | None:
    """What a front end can tell of a REST infer body without decoding it, for the deadline
    test at the door (`InferenceService.refuse_if_late`): the number of images its first `shape`
    declares (1 when that is not a plain leading integer), or None when the request may carry
    an SLO of its own (`slo_ms`, `timeout`, or a backslash that could escape either name) or
    its JSON's length is not a plain integer: such a request is decoded and judged as usual.
    Only the JSON part is read (the binary extension's tensor bytes could hold anything)."""
    head = body
    if header_length is not None:
        h = header_length.strip()
        if not (h.isdigit() and len(h) <= 12):
            return None
        head = body[:int(h)]
    if b"slo_ms" in head or b"timeout" in head or b"\\" in head:
        return None
    i = head.find(b'"shape"')
    if i < 0:
        return 1
    j = head.find(b"[", i + 7)
    if j < 0:
        return 1
    k = j + 1
    n = len(head)
    while k < n and head[k] in b" \t\r\n":
        k += 1
    e = k
    while e < n and 48 <= head[e] <= 57 and e - k < 6:
        e += 1
    images = int(head[k:e]) if e > k and head[e:e + 1] in (b",", b"]", b" ") else 0
    return images if images > 0 else 1


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
    # the usual request's one flat array of numbers, parsed straight into an array
    split = split_flat_data(head) if not rest else None
    req = loads_bounded(head if split is None else split[0], io)
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
    kind, shape = _check_tensor_header(t, io)
    if split is not None and kind == "BYTES" and t.get("data") == []:
        # encoded images are strings: numbers there are an error, said of the values sent
        split = None
        t = loads_bounded(head, io)["inputs"][0]
    tparams = _parameters(t, f"input {t['name']!r}")
    images, encoded = None, None
    binary_in = "binary_data_size" in tparams
    if binary_in:
        size = tparams["binary_data_size"]
        if "data" in t:
            raise InvalidInputError("input has both `data` and binary_data_size; send one")
        if type(size) is not int or size != len(rest):
            raise InvalidInputError(f"input binary_data_size={short(size)} but {len(rest)} "
                                    "bytes of binary data follow the JSON header")
    elif rest:
        raise InvalidInputError(f"{len(rest)} bytes follow the JSON header but no input "
                                "declares binary_data_size")
    elif "data" not in t:
        raise InvalidInputError("input has neither `data` nor binary_data_size")
    if kind == "BYTES":
        encoded = deserialize_bytes(rest, shape[0], f"input {IMAGE_INPUT!r}") if binary_in \
            else encoded_from_json(t["data"], shape[0], tparams)
    else:
        if binary_in:
            want = math.prod(shape) * 4
            if len(rest) != want:
                raise InvalidInputError(f"input binary_data_size={len(rest)} but shape {shape} "
                                        f"of FP32 needs {want} bytes")
            arr = np.frombuffer(rest, dtype="<f4")
        elif split is not None and t["data"] == []:  # the array cut out of the text
            arr = split[1]  # (its count is checked by check_images, as every other path's)
        else:
            arr = json_values(t["data"], shape,
                              may_hold_bools=may_hold_bools(head))
        images = check_images(arr, shape, io, shape_checked=True)
    default_binary = flag("binary_data_output", params["binary_data_output"]) \
        if "binary_data_output" in params else False
    names, binary, classification = _requested_outputs(req.get("outputs"), default_binary, io)
    rid = req.get("id", "")
    if rid is None:
        rid = ""
    if not isinstance(rid, str) or len(rid) > io.max_id_chars:
        raise InvalidInputError(f"request `id` must be a string of at most {io.max_id_chars} "
                                f"characters, got {short(rid)}")
    return Decoded(images, parse_slo_s(params, io.max_slo_s), rid, names, binary, encoded,
                   classification)



def decode_grpc_images(req: Any, io: ModelIO) -> np.ndarray | list[bytes]:
    """The images of a gRPC ModelInferRequest (duck-typed protobuf), by the same rules as
    REST: one input, `input` FP32 or `image` BYTES, shape checked before its values are read,
    raw bytes or the typed contents field (never both, never another contents field), exact
    sizes. FP32: the array; BYTES: the encoded images (`request_images` decodes them)."""
    if len(req.inputs) != 1:
        raise InvalidInputError(f"expected exactly one input tensor, {_inputs_taken(io)}, "
                                f"got {len(req.inputs)}")
    t = req.inputs[0]
    if _input_kind(t.name, t.datatype, io) == "BYTES":
        return encoded_from_grpc(req, t, io)
    shape = check_shape(list(t.shape), io)
    want = math.prod(shape)
    raw, values = grpc_payload(req, t, "fp32_contents", "FP32")
    if raw is not None:
        if len(raw) != 4 * want:
            raise InvalidInputError(f"raw FP32 input of {len(raw)} bytes but shape {shape} "
                                    f"needs {4 * want}")
        arr = np.frombuffer(raw, dtype="<f4")
    else:
        if len(values) != want:
            raise InvalidInputError(f"input has {len(values)} values but shape {shape} needs "
                                    f"{want}")
        arr = np.asarray(values, dtype=np.float32)
    return check_images(arr, shape, io, shape_checked=True)


def grpc_outputs(req: Any, io: ModelIO) -> tuple[list[str], dict[str, int]]:
    """The outputs a gRPC request asks for (all when none), and the classification extension's
    k per output (`parameters["classification"]`)."""
    names, classification = [], {}
    for o in req.outputs:
        if o.name not in OUTPUTS:
            raise InvalidInputError(f"unknown output {o.name[:80]!r}; this model has "
                                    f"{list(OUTPUTS)}")
        if o.name in names:
            raise InvalidInputError(f"output {o.name!r} is requested twice")
        names.append(o.name)
        if "classification" in o.parameters:
            p = o.parameters["classification"]
            which = p.WhichOneof("parameter_choice")
            k = _classification(o.name, getattr(p, which) if which else None, io)
            if k:
                classification[o.name] = k
    return names or list(OUTPUTS), classification


def output_tensors(logits: np.ndarray, names: list[str], classification: Mapping[str, int],
                   io: ModelIO) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, array) of each requested output; a classification output is an
    object array of bytes (server/images.top_k)."""
    arrays = output_arrays(logits)
    out = []
    for name in names:
        k = classification.get(name)
        if k:
            out.append((name, "BYTES", top_k(logits, k, io.labels)))
        else:
            out.append((name, _DTYPES[name], arrays[name]))
    return out


def tensor_bytes(datatype: str, a: np.ndarray) -> bytes:
    """The binary (raw) form of an output tensor."""
    return serialize_bytes(a) if datatype == "BYTES" else a.tobytes()


def output_arrays(logits: np.ndarray) -> dict[str, np.ndarray]:
    # (the method: np.argmax's Python-level dispatch costs ~1 us more per response)
    return {"logits": np.ascontiguousarray(logits, dtype=np.float32),
            "predicted": logits.argmax(axis=1).astype(np.int64)}


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


def encode_http(decoded: Decoded, result: Any, model: str,
                io: ModelIO | None = None) -> tuple[bytes, dict[str, str]]:
    """JSON response, with binary outputs appended where requested."""
    outs, chunks = [], []
    for name, dt, a in output_tensors(result.logits, decoded.outputs, decoded.classification,
                                      io or ModelIO()):
        o: dict[str, Any] = {"name": name, "datatype": dt, "shape": list(a.shape)}
        if decoded.binary.get(name, False):
            raw = tensor_bytes(dt, a)
            o["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif dt == "BYTES":
            o["data"] = [v.decode("utf-8", "replace") for v in a.ravel()]
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
