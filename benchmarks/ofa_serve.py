"""Bring your own supernet, end to end (issue 13, items 4-5): OFA-MobileNetV3 weights in the
published layout, a labelled JPEG folder, `superserve profile`, `superserve serve`, and JPEG
requests through tritonclient.

    # 1. random weights as OFA publishes them ({"state_dict": ...} of the reference
    #    OFAMobileNetV3 w1.2) and a synthetic folder of N JPEGs (class sub-folders, 500x375)
    python benchmarks/ofa_serve.py prepare --out /tmp/ofa_byo [--images 500] [--classes 10]
    # 2. profile (timed by the caller): writes T.json and T.norm.pt
    superserve profile --model ofa_mbv3 --weights /tmp/ofa_byo/W.pth \\
        --data /tmp/ofa_byo/images --max-subnets 30 --out /tmp/ofa_byo/T.json
    # 3. serve it and send JPEGs with tritonclient (HTTP and gRPC): latency, subnet, top-5
    python benchmarks/ofa_serve.py request --dir /tmp/ofa_byo [--requests 20] [--slo-ms 500]

The weights are random, so accuracy and the top-5 classes mean nothing; the figures are the
wall times and latencies. `request` starts `superserve serve --model ofa_mbv3 --weights W.pth
--table T.json` itself and stops it at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path


def prepare(out: Path, images: int, classes: int, seed: int) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from superserve.models.ofa_reference import reference_networks

    out.mkdir(parents=True, exist_ok=True)
    OFAMobileNetV3, _ = reference_networks()
    torch.manual_seed(seed)
    ref = OFAMobileNetV3(n_classes=1000, width_mult=1.2, ks_list=[3, 5, 7],
                         expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    torch.save({"state_dict": ref.state_dict()}, out / "W.pth")
    rng = np.random.default_rng(seed)
    folder = out / "images"
    for i in range(images):
        c = i % classes
        d = folder / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        # a smooth colour field per class plus noise: a 500x375 photo-sized JPEG
        base = rng.integers(0, 256, (3, 4, 3)).astype(np.float32)
        img = np.asarray(Image.fromarray(base.astype(np.uint8)).resize((500, 375),
                                                                       Image.BILINEAR))
        img = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:05d}.jpg", quality=90)
    print(json.dumps({"weights": str(out / "W.pth"),
                      "weights_mb": round((out / "W.pth").stat().st_size / 2**20, 1),
                      "images": images, "classes": classes, "folder": str(folder)}))


def _jpeg(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=90)
    return buf.getvalue()


def request(d: Path, n: int, slo_ms: float, http_port: int, grpc_port: int,
            table: Path | None = None) -> None:
    import numpy as np
    import tritonclient.grpc as tgrpc
    import tritonclient.http as thttp

    cmd = [sys.executable, "-m", "superserve.cli", "serve", "--model", "ofa_mbv3",
           "--weights", str(d / "W.pth"), "--table", str(table or d / "T.json"),
           "--http-port", str(http_port), "--grpc-port", str(grpc_port),
           "--slo-ms", str(slo_ms)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    log = []
    try:
        for line in proc.stdout:  # until ready (or the server dies)
            log.append(line)
            if "serving 'ofa_mbv3'" in line:
                break
        else:
            raise SystemExit("server exited:\n" + "".join(log[-30:]))
        ready_s = time.perf_counter() - t0
        hc = thttp.InferenceServerClient(f"127.0.0.1:{http_port}")
        gc = tgrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        md = hc.get_model_metadata("ofa_mbv3")
        jpegs = [_jpeg(i) for i in range(n)]
        rows = {"http": [], "grpc": []}
        example = {}
        for proto, client, mod in (("http", hc, thttp), ("grpc", gc, tgrpc)):
            for i, data in enumerate([jpegs[0]] + jpegs):  # the first one is a warm-up
                inp = mod.InferInput("image", [1], "BYTES")
                inp.set_data_from_numpy(np.array([data], dtype=object))
                outs = [mod.InferRequestedOutput("logits", class_count=5)]
                t = time.perf_counter()
                r = client.infer("ofa_mbv3", [inp], outputs=outs,
                                 parameters={"slo_ms": int(slo_ms)})
                ms = (time.perf_counter() - t) * 1e3
                p = r.get_response()["parameters"] if proto == "http" else {
                    k: getattr(v, v.WhichOneof("parameter_choice"))
                    for k, v in r.get_response().parameters.items()}
                if i == 0:
                    continue
                rows[proto].append((ms, p))
                if proto not in example:
                    example[proto] = {"top5": [v.decode() for v in r.as_numpy("logits")[0]],
                                      "parameters": p}
        table = json.loads((table or d / "T.json").read_text())
        report = {"ready_s": round(ready_s, 1), "jpeg_bytes": len(jpegs[0]),
                  "table_subnets": len(table["subnets"]),
                  "metadata_inputs": md["inputs"], "example": example}
        for proto, rs in rows.items():
            lat = sorted(ms for ms, _ in rs)
            report[proto] = {
                "requests": len(rs), "latency_ms_p50": round(statistics.median(lat), 1),
                "latency_ms_max": round(lat[-1], 1),
                "service_ms_p50": round(statistics.median(p["service_ms"] for _, p in rs), 1),
                "subnets_chosen": sorted({int(p["subnet_id"]) for _, p in rs}),
                "deadline_met": sum(bool(p["deadline_met"]) for _, p in rs)}
        print(json.dumps(report, indent=1))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, default=Path("/tmp/ofa_byo"))
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("request")
    r.add_argument("--dir", type=Path, default=Path("/tmp/ofa_byo"))
    r.add_argument("--table", type=Path, default=None, help="default: DIR/T.json")
    r.add_argument("--requests", type=int, default=20)
    r.add_argument("--slo-ms", type=float, default=500.0)
    r.add_argument("--http-port", type=int, default=18080)
    r.add_argument("--grpc-port", type=int, default=18081)
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.out, a.images, a.classes, a.seed)
    else:
        request(a.dir, a.requests, a.slo_ms, a.http_port, a.grpc_port, a.table)


if __name__ == "__main__":
    main()
