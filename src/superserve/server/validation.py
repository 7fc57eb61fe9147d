"""Validation of what a request carries, shared by every encoding (codec.py uses it for JSON,
the binary extension and gRPC): sizes bounded before parsing, values checked element-wise,
shapes against the model's metadata. Everything wrong raises a client error (InvalidInputError
400, PayloadTooLargeError 413, UnsupportedEncodingError 415) whose message names the field and
the value, cut short (a message never echoes a payload).
"""

from __future__ import annotations

import json
import math
import threading
import zlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from superserve.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedEncodingError,
)

if TYPE_CHECKING:
    from superserve.server.codec import ModelIO

__all__ = ["check_bytes_shape", "check_images", "check_shape", "decode_content", "flag", "json_values",
           "loads_bounded", "parse_slo_s", "short", "split_flat_data"]


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
                                f"got {short(raw)}")
    if v > max_s:
        raise InvalidInputError(f"parameter {name}={short(raw)} {unit} is longer than the "
                                f"limit of {max_s:g} s")
    return v


def parse_slo_s(params: Mapping[str, Any], max_s: float = 3600.0) -> float | None:
    """`slo_ms` (ms) wins over Triton's `timeout` (us); both must be positive and finite."""
    if "slo_ms" in params:
        return _positive("slo_ms", params["slo_ms"], "milliseconds", 1e-3, max_s)
    if "timeout" in params:
        return _positive("timeout", params["timeout"], "microseconds", 1e-6, max_s)
    return None


def short(v: Any, n: int = 80) -> str:
    """repr(v), cut to n characters (messages never echo a whole payload)."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 200:
        return f"<integer of ~{int(v.bit_length() * 0.30103)} digits>"
    r = repr(v) if not isinstance(v, (list, dict)) or len(v) < 16 else \
        f"<{type(v).__name__} of {len(v)} items>"
    return r if len(r) <= n else r[:n - 3] + "..."


def flag(name: str, v: Any) -> bool:
    """A boolean parameter: JSON true/false (or the strings "true"/"false"), nothing else;
    "false" is false, not a truthy string."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise InvalidInputError(f"parameter {name} must be a boolean, got {short(v)}")


def _int_list(shape: Any) -> list[int]:
    if not isinstance(shape, (list, tuple)) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise InvalidInputError(f"input shape must be a list of integers, got {short(shape)}")
    return list(shape)


def _check_count(shape: list[int], io: ModelIO) -> list[int]:
    """N, the leading dimension: 1 <= N <= max_images."""
    n = shape[0]
    if n < 1:
        raise InvalidInputError(f"input shape {shape} is wrong: N must be >= 1")
    if n > io.max_images:
        raise InvalidInputError(
            f"input has N={n} images, more than the limit of {io.max_images} per request")
    return shape


def check_shape(shape: Any, io: ModelIO) -> list[int]:
    """The declared input shape against the model's metadata, before any value is read: its
    product bounds how many elements the payload may hold."""
    shape = _int_list(shape)
    if len(shape) != 4 or list(shape[1:]) != list(io.image_shape):
        raise InvalidInputError(
            f"input shape {short(shape)} is wrong: expected "
            f"[N, {', '.join(map(str, io.image_shape))}]")
    return _check_count(shape, io)


def check_bytes_shape(shape: Any, io: ModelIO) -> list[int]:
    """The shape of a BYTES input of encoded images: [N] (or [N, 1]), 1 <= N <= max_images."""
    shape = _int_list(shape)
    if not (len(shape) == 1 or len(shape) == 2 and shape[1] == 1):
        raise InvalidInputError(f"input shape {short(shape)} is wrong for encoded images: "
                                "expected [N] (one encoded image per element)")
    return _check_count(shape, io)


_F32_MAX = float(np.finfo(np.float32).max)


_MAX, _MIN = np.maximum.reduce, np.minimum.reduce  # (arr.max() adds a Python-level wrapper)
_SQUARES_OK = _F32_MAX * _F32_MAX  # ~1.2e77, a float64


def check_images(arr: np.ndarray, shape: Sequence[int], io: ModelIO,
                 shape_checked: bool = False) -> np.ndarray:
    """Validate a decoded FP32 tensor against its declared shape and the model's input
    (`shape_checked`: the caller already ran `check_shape` on it)."""
    if not shape_checked:
        shape = check_shape(shape, io)
    if arr.size != math.prod(shape):
        raise InvalidInputError(
            f"input has {arr.size} values but shape {shape} needs {math.prod(shape)}")
    arr = arr.reshape(shape)
    # Numbers from JSON (float64) are decided by one dot product (~0.7 us for a 28x28 image,
    # where two reductions cost ~2.6 us): a sum of squares of at most FP32_MAX^2 bounds every
    # |value| by FP32_MAX (NaN and inf fail the comparison). Past it (a bad value, or only a
    # large sum) the exact checks below decide. `np.vdot`, not `dot`: on values far outside
    # FP32 the sum overflows, and `dot` warns of that where `vdot` does not.
    if arr.dtype == np.float64 and np.vdot(arr, arr) <= _SQUARES_OK:
        return arr.astype(np.float32)  # a new C-contiguous array
    if arr.dtype != np.float32:  # float64, or int64 from JSON integers
        # two reductions decide it: within [-max, max] is finite and castable (NaN fails
        # both comparisons); the counts for the message only on the error path
        if not (_MAX(arr, axis=None) <= _F32_MAX and _MIN(arr, axis=None) >= -_F32_MAX):
            with np.errstate(over="ignore", invalid="ignore"):
                big = int((np.abs(arr) > _F32_MAX).sum())
            if big:
                raise InvalidInputError(f"input has {big} values outside the FP32 range")
            _raise_non_finite(arr)
        return arr.astype(np.float32)  # a new C-contiguous array
    if not np.isfinite(arr).all():
        _raise_non_finite(arr)
    return np.ascontiguousarray(arr)


def _raise_non_finite(arr: np.ndarray) -> None:
    bad = int((~np.isfinite(arr)).sum())
    raise InvalidInputError(f"input has {bad} non-finite values (NaN or Inf)")


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


_JSON_STRUCTURE = np.zeros(256, dtype=bool)  # the bytes that decide nesting: [ ] { } " \\
_JSON_STRUCTURE[[91, 93, 123, 125, 34, 92]] = True


def _json_depth_over(head: bytes, limit: int) -> bool:
    """True when the JSON text nests arrays/objects deeper than `limit`, brackets inside
    strings ignored. Skipped when the text has too few brackets to nest that deep (every
    usual request); otherwise vectorised over the structural bytes only (brackets, quotes,
    backslashes), so a 16 MiB body of numbers costs ~60 ms and a few MB, not a pass of
    int64 temporaries over every byte."""
    if head.count(b"[") + head.count(b"{") <= limit:
        return False
    a = np.frombuffer(head, dtype=np.uint8)
    pos = np.flatnonzero(_JSON_STRUCTURE[a])
    c = a[pos]
    n = len(pos)
    k = np.arange(n)
    # a quote is escaped when the run of backslashes just before it has odd length: runs of
    # backslashes at consecutive positions, and each one's length so far
    is_bs = c == 92
    cont = np.zeros(n, dtype=bool)
    cont[1:] = is_bs[1:] & is_bs[:-1] & (pos[1:] == pos[:-1] + 1)
    run_start = np.maximum.accumulate(np.where(is_bs & ~cont, k, 0))
    run = np.where(is_bs, k - run_start + 1, 0)
    before = np.zeros(n, dtype=np.int64)
    before[1:] = np.where(is_bs[:-1] & (pos[:-1] + 1 == pos[1:]), run[:-1], 0)
    quote = (c == 34) & (before % 2 == 0)
    in_string = (np.cumsum(quote) % 2).astype(bool)  # a closing quote reads as outside
    step = ((c == 91) | (c == 123)).astype(np.int8) - ((c == 93) | (c == 125)).astype(np.int8)
    step[in_string] = 0
    return bool(np.cumsum(step, dtype=np.int64).max() > limit)


_DECODERS: dict[int, json.JSONDecoder] = {}


def _decoder(digits: int) -> json.JSONDecoder:
    """One decoder per integer bound, built once (json.loads with a hook builds one per call:
    ~3 us on every request)."""
    d = _DECODERS.get(digits)
    if d is None:
        def bounded_int(text: str) -> int:
            n = len(text.lstrip("-"))
            if n > digits:
                raise InvalidInputError(f"request JSON has an integer of {n} digits; the "
                                        f"limit is {digits}")
            return int(text)

        d = _DECODERS[digits] = json.JSONDecoder(parse_int=bounded_int)
    return d


try:  # a declared dependency; the stdlib decoder stays as the fallback
    import orjson
except ImportError:  # pragma: no cover
    orjson = None


def loads_bounded(head: bytes, io: ModelIO) -> Any:
    """JSON (UTF-8) with its nesting depth and integer literals bounded before they cost."""
    if _json_depth_over(head, io.max_json_depth):
        raise InvalidInputError(f"request JSON nests deeper than the limit of "
                                f"{io.max_json_depth} levels")
    if orjson is not None:  # ~3.5x faster than the stdlib's decoder on a 28x28 request
        try:
            return orjson.loads(head)
        except orjson.JSONDecodeError as e:
            msg = str(e)
            if "infinity" in msg or "64-bit" in msg:  # orjson's bound: int64/uint64, finite
                raise InvalidInputError(f"request JSON has a number out of range: integers "
                                        f"are limited to {io.max_int_digits} digits "
                                        f"({msg[:120]})") from None
            # anything else (NaN literals, bad UTF-8, syntax): the stdlib decoder below says
            # what is wrong in the words the API has always used
    try:
        return _decoder(io.max_int_digits).decode(head.decode("utf-8"))
    except InvalidInputError:
        raise
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise InvalidInputError(f"request body is not valid JSON: {str(e)[:200]}") from None
    except RecursionError:  # unreachable past the depth scan; kept as a guard
        raise InvalidInputError("request JSON nests too deeply") from None


try:  # a declared dependency; without it every body takes the orjson path
    import simdjson
except ImportError:  # pragma: no cover
    simdjson = None

_PARSERS = threading.local()  # a simdjson parser per thread (one is not thread-safe)
_NOT_IN_FLAT = (b"[", b'"', b"{", b"t", b"f", b"n")


def split_flat_data(head: bytes) -> tuple[bytes, np.ndarray] | None:
    """The usual JSON request, `"data": [n, n, ...]` with one flat array of numbers, parsed
    without a Python object per number: the text with that array cut out (`[]` in its
    place, for the JSON decoder) and the array as float64, parsed by simdjson straight into a
    buffer (a 28x28 request: ~15 us, against ~35 us for orjson's list of floats and
    `np.array` of it). None (the caller decodes the whole text) unless the text holds exactly
    one `"data"`, followed by `:` and `[`, its span up to the first `]` holds no nested array,
    string, object, literal or backslash, simdjson reads it, and the text has no backslash
    anywhere (so no key elsewhere is an escaped `"data"`). With one `"data"` in the text, the
    input's `data` is the array cut out exactly when the decoded input's `data` is `[]`."""
    if simdjson is None:
        return None
    i = head.find(b'"data"')
    if i < 0 or b"\\" in head:
        return None
    k = i + 6
    n = len(head)
    while k < n and head[k] in b" \t\r\n":
        k += 1
    if k >= n or head[k] != 58:  # ':'
        return None
    k += 1
    while k < n and head[k] in b" \t\r\n":
        k += 1
    if k >= n or head[k] != 91:  # '['
        return None
    j = head.find(b"]", k)
    if j < 0:
        return None
    span = head[k + 1:j]
    for b in _NOT_IN_FLAT:
        if b in span:
            return None
    # a second "data" can only follow the array: up to `]` there is no '"' past the first
    if head.find(b'"data"', j + 1) >= 0:
        return None
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = simdjson.Parser()
    try:
        doc = parser.parse(head[k:j + 1])
        try:
            buf = doc.as_buffer(of_type="d")
        finally:
            del doc  # the parser holds one live document at a time
    except (ValueError, TypeError, RuntimeError):  # a bad number, out of range, empty
        return None
    return head[:k] + b"[]" + head[j + 1:], np.frombuffer(buf, dtype=np.float64)


def may_hold_bools(head: bytes) -> bool:
    """Whether the `data` of a JSON request text may hold a `true` or `false` (False only when
    it surely does not). The span from the one `"data"` key to the next `}` holds the whole
    array unless a string inside it holds a `}`, so a span with a `"` in it proves nothing;
    numbers have no `t`, `f` or `"`, so three byte searches decide it. Otherwise (`"data"`
    twice, a string in the span, or a `t`/`f` there, e.g. a `"parameters"` key after the
    data) both words are searched in the whole text."""
    i = head.find(b'"data"')
    if i >= 0 and head.find(b'"data"', i + 6) < 0:
        j = head.find(b"}", i)
        span = head[i + 6:j] if j >= 0 else head[i + 6:]
        if b"t" not in span and b"f" not in span and b'"' not in span:
            return False
    return b"true" in head or b"false" in head


_NUMBER_TYPES = frozenset((int, float))  # bool is not int here: type(), not isinstance


def json_values(data: Any, shape: list[int], may_hold_bools: bool = True) -> np.ndarray:
    """JSON `data` (flat, or nested as `shape`) -> float64 (or int64) array, element-wise
    typed: every leaf must be a JSON number; strings, booleans and nulls are errors, never
    coerced.

    `may_hold_bools=False` (the caller saw no `true`/`false` in the JSON text) allows the fast
    path: numpy infers the array in C, and any string, null, ragged nesting or out-of-range
    integer shows in its dtype or shape, which sends the request down the element-wise path
    below for the exact error. Booleans would not show (numpy promotes them to numbers), hence
    the flag. ~3x cheaper on a 28x28 request."""
    want = math.prod(shape)
    if not isinstance(data, list):
        raise InvalidInputError(f"input `data` must be a list of numbers, got {short(data)}")
    if not may_hold_bools:
        try:
            arr = np.array(data)
        except (ValueError, OverflowError, TypeError):  # ragged, or an integer past int64
            arr = None
        if arr is not None and arr.dtype.kind in "fi" and arr.size == want and \
                (arr.ndim == 1 or arr.shape == tuple(shape)):
            return arr.reshape(-1)
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
                                f"{i} ({short(bad, 40)}); every element must be a number")
    return np.array(flat, dtype=np.float64)
