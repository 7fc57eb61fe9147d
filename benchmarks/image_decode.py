"""What an encoded image costs the server (issue 13, item 3): decode + resize + centre crop +
scale to [0, 1] (server/images.decode_images, the family's InputSpec), per image, for a 224 px
JPEG and a typical 500x375 photo (and PNGs), inline and through the off-loop pool
(server/offload.run_blocking: where the server runs it), and the event loop's gaps meanwhile
(a 1 ms ticker on the loop while decodes run in the pool: what other requests wait). The
minimum is the cost when the process had a core; the median includes other processes' load.

    python benchmarks/image_decode.py [--model ofa_mbv3] [--repeats 200] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import time

import numpy as np


def _encode(w: int, h: int, fmt: str, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    # a photo-like image: a smooth field plus noise (pure noise compresses unlike a photo)
    base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        (w, h), Image.BICUBIC)
    a = np.clip(np.asarray(base, np.float32) + rng.normal(0, 12, (h, w, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(a.astype(np.uint8)).save(buf, format=fmt, **({"quality": 90} if fmt ==
                                                                 "JPEG" else {}))
    return buf.getvalue()


def _pct(v: list[float], q: float) -> float:
    v = sorted(v)
    return v[min(len(v) - 1, int(q * len(v)))]


async def _measure(data: bytes, spec, repeats: int) -> dict:
    """Inline and through run_blocking (as the front end calls it), interleaved so that load
    from other processes hits both alike; a ticker on the loop measures its gaps meanwhile."""
    from superserve.server.images import decode_images, decode_images_async

    gaps, stop = [], False

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    for _ in range(5):
        decode_images([data], spec)  # warm-up
    inline, pooled = [], []
    t = asyncio.get_running_loop().create_task(ticker())
    for _ in range(repeats):
        t0 = time.perf_counter()
        await decode_images_async([data], spec)
        pooled.append(time.perf_counter() - t0)
        await asyncio.sleep(0.002)
    stop = True
    await t
    for _ in range(repeats):
        t0 = time.perf_counter()
        decode_images([data], spec)
        inline.append(time.perf_counter() - t0)
        await asyncio.sleep(0.002)  # as the pooled runs pause: a busy loop is preempted more
    us = lambda v: round(v * 1e6)
    return {"inline_us_min": us(min(inline)), "inline_us_p50": us(statistics.median(inline)),
            "pooled_us_min": us(min(pooled)), "pooled_us_p50": us(statistics.median(pooled)),
            "loop_gap_ms_p50": round(statistics.median(gaps) * 1e3, 2),
            "loop_gap_ms_p99": round(_pct(gaps, 0.99) * 1e3, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="ofa_mbv3")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    from superserve.models.registry import model_input_spec
    spec = model_input_spec(a.model)
    rows = []
    for name, w, h, fmt in (("224px JPEG", 224, 224, "JPEG"), ("500x375 JPEG", 500, 375, "JPEG"),
                            ("1600x1200 JPEG", 1600, 1200, "JPEG"), ("500x375 PNG", 500, 375,
                                                                     "PNG")):
        data = _encode(w, h, fmt)
        row = {"image": name, "bytes": len(data)}
        row.update(asyncio.run(_measure(data, spec, a.repeats)))
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"model": a.model, "input": list(spec.shape), "resize": spec.resize,
           "where": "server/offload.run_blocking (the front end's thread pool), per request",
           "rows": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
