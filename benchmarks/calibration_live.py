"""The live matrix behind issue 11's figures: `superserve serve` with DEFAULT flags, one fresh
server per (policy, rate), driven by the independent open-loop client.

Placement (2-core machine):
  split     (default) worker alone on CPU 1 (`--worker-cpus 1`); the server process (router,
            front ends) under `taskset -c 0`, the client under `taskset -c 0`
  one-core  router and worker share CPU 1 (server `taskset -c 1`, `--worker-cpus 1`); the
            client on CPU 0

Per cell: start the server, a warm-up (50 req/s for --warmup-s; the JSON client then sends 32
at once to open its connections), scrape /metrics, the timed run (--duration-s), scrape
/metrics again. Client-side attainment (latency from the
scheduled send time) beside the server's own (deltas of its request counters over the timed
run, and the cumulative `superserve_slo_attainment` gauge), and every `superserve_calibration_*`
metric at the end. Before each server starts, --noise-s (3) seconds of fixed Python work on
CPU 1 say how steady the worker's core was (`worker_cpu_noise`: stalls of >= 10 ms per second,
the longest, the speed's swing; profiling/noise.py): a shared VM's stalls cost a deadline
scheduler attainment, and a cell's figure is the host's as much as the server's.

Order: rate by rate, the policies of a rate back to back (a VM whose speed drifts over minutes
then treats the policies compared at a rate alike). --reps N runs the whole list N times and
ends with a summary per (policy, rate): the mean and range of the client's attainment, the
server's mean, the accuracies, and the mean paired difference (same repetition) to the first
policy of `--policies` (`summary` in the JSON; one run of one cell is a sample of the host).

    python benchmarks/calibration_live.py                                  # the matrix
    python benchmarks/calibration_live.py --rates 1000 --duration-s 30 --hog-at 10
    python benchmarks/calibration_live.py --rates 1000 --hog-at 10 --duration-s 30 \\
        --server-args=--no-calibrate                     # the same without calibration
    python benchmarks/calibration_live.py --placement one-core --rates 100 250 500
    python benchmarks/calibration_live.py --protocol binary|grpc|grpc-stream  # superserve loadgen
    python benchmarks/calibration_live.py --protocol grpc --client-args='--grpc-deadline timeout'
    python benchmarks/calibration_live.py --trace-kind azure-code --rates 1000
    python benchmarks/calibration_live.py --placement one-core --policies clipper:0 slackfit \\
        --rates 250 --reps 3                             # mean, range, paired difference

--protocol json uses benchmarks/open_loop_client.py (aiohttp, KServe v2 JSON); binary (REST
with the binary tensor extension) and grpc use the project's `superserve loadgen`. --hog-at S
starts `taskset -c 1 python -c 'while True: pass'` S seconds into the timed run (the worker's
core) and reports attainment over the run and in its last 10 s. Every server, client and hog
is killed at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from superserve.bench.server_proc import format_rules, parse_metrics, plan_rules
from superserve.profiling.noise import measure_host_noise

HERE = Path(__file__).resolve().parent
PROCS: list[subprocess.Popen] = []  # everything started here, killed in `cleanup`


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", type=float, nargs="+", default=[500, 1000, 1500, 2000])
    p.add_argument("--policies", nargs="+",
                   default=["slackfit", "clipper:0", "clipper:0.965", "clipper:0.975"])
    p.add_argument("--duration-s", type=float, default=20.0)
    p.add_argument("--warmup-s", type=float, default=3.0)
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--placement", choices=["split", "one-core"], default="split")
    p.add_argument("--protocol", choices=["json", "binary", "grpc", "grpc-stream"],
                   default="json")
    p.add_argument("--trace-kind", choices=["bursty", "azure-code"], default="bursty")
    p.add_argument("--hog-at", type=float, default=None,
                   help="start a CPU hog on the worker's core this many seconds into the run")
    p.add_argument("--server-args", default="", help="extra `superserve serve` flags")
    p.add_argument("--batch-logs", action="store_true",
                   help="each cell's server writes its batch log (`serve --batch-log`) beside "
                        "its server log, as TAG.batches.csv (one CSV per cell and repetition)")
    p.add_argument("--client-args", default="",
                   help="extra client flags: `superserve loadgen` (binary, grpc), e.g. "
                        "--client-args='--grpc-deadline timeout', or open_loop_client.py "
                        "(json), e.g. --client-args='--warmup-burst 64'")
    p.add_argument("--noise-s", type=float, default=3.0,
                   help="before each cell, time fixed Python work on CPU 1 (the worker's) for "
                        "this long: how steady the core was (profiling/noise.py; 0: skip). "
                        "The 2-core VM's stalls came in clusters ~1.9 s apart: 1 s saw none "
                        "about half the time")
    p.add_argument("--reps", type=int, default=1,
                   help="run every (rate, policy) cell this many times; the policies of a rate "
                        "run one after another within each repetition (a drifting host "
                        "affects them alike), and a summary gives each cell's mean and range "
                        "and its paired difference to the first policy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results/calibration_live.json"))
    p.add_argument("--json", action="store_true", help="print the rows as JSON too")
    args = p.parse_args(argv)
    if not args.noise_s >= 0:
        p.error(f"--noise-s must be >= 0, got {args.noise_s}")
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    return args


def cells(policies: list[str], rates: list[float], reps: int) -> list[tuple[int, float, str]]:
    """(repetition, rate, policy) in the order they run: the policies of one rate back to
    back, so that a host whose speed drifts over minutes (a shared VM) treats the policies
    compared at that rate alike; then the next rate; then the next repetition."""
    return [(rep, rate, policy) for rep in range(reps) for rate in rates for policy in policies]


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def summarize_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (policy, rate), in the order first run: how many runs, the mean and range of the
    client's and the server's attainment, the mean accuracies, and the mean paired
    difference (same repetition, same rate) to the first policy run at that rate."""
    by_cell: dict[tuple[str, float], list[dict[str, Any]]] = {}
    first: dict[float, str] = {}
    for r in rows:
        by_cell.setdefault((r["policy"], r["rate"]), []).append(r)
        first.setdefault(r["rate"], r["policy"])
    index = {(r["policy"], r["rate"], r.get("rep", 0)): r for r in rows}
    out = []
    for (policy, rate), runs in by_cell.items():
        cell: dict[str, Any] = {
            "policy": policy, "rate": rate, "runs": len(runs),
            "slo_attainment": _spread([r["slo_attainment"] for r in runs]),
            "server_slo_attainment": _spread([r["server_slo_attainment"] for r in runs
                                              if r.get("server_slo_attainment") is not None]),
            "profiled_accuracy": _spread([r["profiled_accuracy"] for r in runs])["mean"],
            "realized_accuracy": _spread([r["realized_accuracy"] for r in runs])["mean"]}
        base = first[rate]
        pairs = [(r, index[(base, rate, r.get("rep", 0))]) for r in runs
                 if policy != base and (base, rate, r.get("rep", 0)) in index]
        if pairs:
            n = len(pairs)
            cell["paired"] = {
                "against": base, "pairs": n,
                "slo_attainment_diff": sum(a["slo_attainment"] - b["slo_attainment"]
                                           for a, b in pairs) / n,
                "profiled_accuracy_diff": sum(a["profiled_accuracy"] - b["profiled_accuracy"]
                                              for a, b in pairs) / n}
        out.append(cell)
    return out


def name_column(policy: str) -> str:
    """The first column of a printed row: a policy name longer than it goes on a line of its
    own first, so the numbers stay aligned."""
    if len(policy) > 16:
        print(policy)
        policy = ""
    return f"{policy:16s}"


def print_summary(summary: list[dict[str, Any]]) -> None:
    print(f"\n{'summary':16s} {'rate':>6s} {'runs':>4s} {'client mean [min-max]':>24s} "
          f"{'server mean':>11s} {'prof.acc':>8s} {'real.acc':>8s}  paired vs the rate's first")
    for c in summary:
        a, s = c["slo_attainment"], c["server_slo_attainment"]
        span = f"{a['mean']:.4f} [{a['min']:.4f}-{a['max']:.4f}]"
        p = c.get("paired")
        paired = ("" if p is None else
                  f"{p['slo_attainment_diff']:+.4f} attainment, "
                  f"{100 * p['profiled_accuracy_diff']:+.2f} points accuracy vs {p['against']} "
                  f"({p['pairs']} pairs)")
        print(f"{name_column(c['policy'])} {c['rate']:6.0f} {c['runs']:4d} {span:>24s} "
              f"{fmt(None if s is None else s['mean']):>11s} "
              f"{100 * c['profiled_accuracy']:7.2f}% {100 * c['realized_accuracy']:7.2f}%  "
              f"{paired}", flush=True)


def trace_spec(kind: str, rate: float, duration_s: float, seed: int) -> str:
    if kind == "bursty":
        return f"bursty:base={rate / 2:g},variant={rate / 2:g},cv2=4,duration={duration_s:g},seed={seed}"
    return f"azure-llm:name=code,rate={rate:g},duration={duration_s:g},seed={seed}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], **kw: Any) -> subprocess.Popen:
    """A child in its own process group (so its own children die with it), remembered."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
    PROCS.append(proc)
    return proc


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:  # SIGTERM to the leader only: a server drains, then stops its workers
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:  # its process group: the server's workers, whatever is left
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def cleanup() -> None:
    for proc in reversed(PROCS):
        kill(proc)
    PROCS.clear()


class Server:
    def __init__(self, policy: str, args: argparse.Namespace, log_path: Path,
                 batch_log: Path | None = None) -> None:
        self.http, self.grpc = free_port(), free_port()
        cpu = "0" if args.placement == "split" else "1"
        cmd = ["taskset", "-c", cpu, sys.executable, "-m", "superserve.cli", "-v", "serve",
               "--host", "127.0.0.1", "--http-port", str(self.http), "--grpc-port",
               str(self.grpc), "--policy", policy, "--worker-cpus", "1",
               *(["--batch-log", str(batch_log)] if batch_log is not None else []),
               *shlex.split(args.server_args)]
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  closed in stop()
        self.proc = start(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self.cmd = cmd

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}); log {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-2000:])
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"server not ready within {timeout_s:.0f} s; log {self.log_path}")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as r:
            return parse_metrics(r.read().decode())

    def stop(self) -> None:
        kill(self.proc)
        self._log.close()


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of one process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_s(pid: int) -> tuple[float, float]:
    """(the server process's CPU seconds, its whole tree's: server + worker processes)."""
    own = _proc_cpu_s(pid)
    tree = own
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                tree += _proc_cpu_s(int(entry))
        except (OSError, ValueError, IndexError):  # gone meanwhile
            continue
    return own, tree


def server_attainment(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Met / all requests the server counted over the timed run (counter deltas)."""
    def total(m: dict[str, float]) -> float:
        return sum(v for k, v in m.items() if k.startswith("superserve_requests_total{"))

    def met(m: dict[str, float]) -> float:
        return m.get("superserve_requests_deadline_met_total", 0.0)

    n = total(after) - total(before)
    return (met(after) - met(before)) / n if n > 0 else None


def ratio_quantiles(before: dict[str, float], after: dict[str, float],
                    qs: tuple[float, ...] = (0.5, 0.99)) -> dict[str, float | None]:
    """Quantiles of observed / planned batch time over the timed run, from the deltas of the
    `superserve_calibration_batch_ratio` histogram (upper bucket bounds: a ratio of 1.05 is
    reported as its bucket's bound)."""
    pre = "superserve_calibration_batch_ratio_bucket{le=\""
    b = sorted((float(k[len(pre):-2]) if not k.endswith('+Inf"}') else float("inf"),
                after[k] - before.get(k, 0.0)) for k in after if k.startswith(pre))
    n = b[-1][1] if b else 0.0
    out: dict[str, float | None] = {}
    for q in qs:
        out[f"p{round(100 * q)}"] = next((le for le, c in b if c >= q * n), None) if n else None
    out["batches"] = n
    return out


def client_cmd(args: argparse.Namespace, srv: Server, spec: str, out_json: Path,
               out_dir: Path) -> list[str]:
    if args.protocol == "json":  # its own warm-up: 50 req/s for warmup_s, then 32 at once
        return ["taskset", "-c", "0", sys.executable, str(HERE / "open_loop_client.py"),
                "--url", srv.url, "--trace", spec, "--slo-ms", str(args.slo_ms), "--warmup",
                str(round(50 * args.warmup_s)), "--seed", str(args.seed), "--out", str(out_json),
                *shlex.split(args.client_args)]
    url = srv.url if args.protocol == "binary" else f"127.0.0.1:{srv.grpc}"
    return ["taskset", "-c", "0", sys.executable, "-m", "superserve.cli", "loadgen", "--url", url,
            "--protocol", "http" if args.protocol == "binary" else args.protocol, "--trace", spec,
            "--slo-ms", str(args.slo_ms), "--seed", str(args.seed), "--timeout-s", "5",
            "--out", str(out_dir), "--json", *shlex.split(args.client_args)]


def run_client(cmd: list[str], timeout_s: float, hog_at: float | None, hog: list,
               on_start=None) -> str:
    """Run the client; `on_start()` when its timed run begins (the JSON client says so on
    stderr, after its warm-up); with `hog_at`, start the hog that long after it (for
    `superserve loadgen`, which says nothing: ~2 s after it starts)."""
    proc = start(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = threading.Event()

    def read_err() -> None:
        try:
            for line in proc.stderr:
                if "run started" in line and not started.is_set():
                    started.set()  # first: the hog's timer must not wait on a scrape
                    if on_start is not None:
                        try:
                            on_start()
                        except Exception as e:  # noqa: BLE001  (said, and the row says "-")
                            print(f"calibration_live: mark at run start failed: {e!r}",
                                  file=sys.stderr, flush=True)
        except ValueError:  # the pipe was closed under us at the end of the run
            pass
        started.set()

    threading.Thread(target=read_err, daemon=True).start()
    timer = None
    if hog_at is not None:
        def arm() -> None:
            if any(c.endswith("open_loop_client.py") for c in cmd):
                started.wait(timeout_s)
            else:
                time.sleep(2.0)
            time.sleep(hog_at)
            if proc.poll() is None:
                hog.append(start(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"],
                                 stdout=subprocess.DEVNULL))
        timer = threading.Thread(target=arm, daemon=True)
        timer.start()
    # stdout here, stderr in the thread above: communicate() would read stderr too and could
    # take the "run started" line from under the thread (then nothing is marked)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        kill(proc)

    killer = threading.Timer(timeout_s, expire)
    killer.start()
    try:
        out = proc.stdout.read()
        proc.wait()
    finally:
        killer.cancel()
    if expired.is_set():
        raise RuntimeError(f"client did not finish within {timeout_s:.0f} s")
    if proc.returncode != 0:
        raise RuntimeError(f"client exited with {proc.returncode}: {' '.join(cmd)}")
    return out


def loadgen_report(summary: dict[str, Any], out_dir: Path, slo_ms: float,
                   duration_s: float) -> dict[str, Any]:
    """`superserve loadgen --json` output in the JSON client's terms (latency from the
    scheduled send time; per-second timeline from its requests.csv)."""
    per: dict[int, list[int]] = {}
    with open(out_dir / "requests.csv") as f:
        for r in csv.DictReader(f):
            s = int(float(r["scheduled_s"]))
            lag_ms = (float(r["sent_s"]) - float(r["scheduled_s"])) * 1e3 if r["sent_s"] != "nan" \
                else float("inf")
            ok = r["deadline_met"] == "True" and float(r["latency_ms"]) + lag_ms <= slo_ms
            c = per.setdefault(s, [0, 0])
            c[0] += 1
            c[1] += ok
    return {"requests": summary["requests"],
            "slo_attainment": summary["slo_attainment_from_schedule"],
            "outcomes": summary["outcomes"],
            "profiled_accuracy": summary["mean_serving_accuracy"],
            "realized_accuracy": summary["realized_accuracy"],
            "latency_ms_p50": summary["latency_ms_p50"], "latency_ms_p99": summary["latency_ms_p99"],
            "max_send_lag_ms": summary["max_send_lag_ms"],
            "timeline": [{"t_s": s, "requests": n, "met": m} for s, (n, m) in sorted(per.items())]}


def last_attainment(timeline: list[dict[str, Any]], since_s: float) -> float | None:
    b = [t for t in timeline if t["t_s"] >= since_s]
    n = sum(t["requests"] for t in b)
    return sum(t["met"] for t in b) / n if n else None


def run_cell(policy: str, rate: float, args: argparse.Namespace, work: Path,
             repetition: int = 0) -> dict[str, Any]:
    spec = trace_spec(args.trace_kind, rate, args.duration_s, args.seed)
    # before the server starts, so nothing of the cell runs meanwhile
    noise = measure_host_noise(args.noise_s, cpu=1) if args.noise_s > 0 else None
    tag = re.sub(r"[^A-Za-z0-9.]+", "_",
                 f"{policy}_{rate:g}" + (f"_r{repetition}" if repetition else ""))
    srv = Server(policy, args, work / f"{tag}.server.log",
                 work / f"{tag}.batches.csv" if args.batch_logs else None)
    hog: list[subprocess.Popen] = []
    try:
        srv.wait_ready()
        before: dict[str, float] = {}
        if args.protocol != "json" and args.warmup_s > 0:  # poisson 50 req/s, not counted
            warm = f"poisson:rate=50,duration={args.warmup_s:g},seed={args.seed + 1}"
            run_client(client_cmd(args, srv, warm, work / f"{tag}.warm.json",
                                  work / f"{tag}.warm"), args.warmup_s + 60, None, hog)
        cpu0: list[tuple[float, float]] = []

        def mark() -> None:
            cpu0.append(server_cpu_s(srv.proc.pid))  # /proc first: instant
            t0 = time.monotonic()
            before.update(srv.metrics())
            if time.monotonic() - t0 > 1.0:
                print(f"calibration_live: the /metrics scrape took "
                      f"{time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)

        if args.protocol != "json":
            mark()
        out_json, out_dir = work / f"{tag}.client.json", work / f"{tag}.loadgen"
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_start = server_cpu_s(srv.proc.pid)  # fallback: the warm-up counted in too
        out = run_client(client_cmd(args, srv, spec, out_json, out_dir),
                         args.duration_s + args.warmup_s + 90, args.hog_at, hog,
                         on_start=mark if args.protocol == "json" else None)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the client, waited for
        client_cpu_s = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
        cpu1 = server_cpu_s(srv.proc.pid)
        after = srv.metrics()
    finally:
        for h in hog:
            kill(h)
        srv.stop()
    if args.protocol == "json":
        report = json.loads(out_json.read_text())
    else:
        report = loadgen_report(json.loads(out.strip().splitlines()[-1]), out_dir,
                                args.slo_ms, args.duration_s)
    # CPU from the start of the timed run when it was marked (binary/grpc always; JSON when
    # the mark from the client's stderr came through), else from before the client started,
    # over its warm-up requests too
    cpu_base = cpu0[0] if cpu0 else cpu_start
    n_cpu = max(report["requests"] + (0 if cpu0 else round(50 * args.warmup_s) + 32), 1)
    row = {"policy": policy, "rate": rate, "rep": repetition, "trace": spec,
           "placement": args.placement,
           "protocol": args.protocol, "server_args": args.server_args,
           "client_args": args.client_args,
           "batch_log": str(work / f"{tag}.batches.csv") if args.batch_logs else None,
           **{k: report[k] for k in ("requests", "slo_attainment", "outcomes",
                                     "profiled_accuracy", "realized_accuracy",
                                     "latency_ms_p50", "latency_ms_p99", "max_send_lag_ms")},
           "server_slo_attainment": server_attainment(before, after),
           # CPU per request over the timed run (the /metrics scrapes are inside it)
           "router_cpu_us_per_request": (cpu1[0] - cpu_base[0]) * 1e6 / n_cpu,
           "server_cpu_us_per_request": (cpu1[1] - cpu_base[1]) * 1e6 / n_cpu,
           # the whole client process (warm-up and start-up included) per timed request
           "client_cpu_us_per_request": client_cpu_s * 1e6 / max(report["requests"], 1),
           "server_slo_attainment_gauge": after.get("superserve_slo_attainment"),
           # requests refused as late before their bodies were decoded (--late-at-door)
           "late_at_door": after.get("superserve_late_at_door_total"),
           "calibration": {k: v for k, v in after.items()
                           if k.startswith("superserve_calibration_")},
           "batch_ratio_observed_over_planned": ratio_quantiles(before, after),
           # batches over the timed run by the policy rule that planned them
           "plan_rules": plan_rules(before, after),
           "worker_cpu_noise": None if noise is None else noise.to_dict(),
           "timeline": report["timeline"]}
    if args.hog_at is not None:
        row["hog_at_s"] = args.hog_at
        row["hog_started"] = bool(hog)
        row["slo_attainment_last_10s"] = last_attainment(report["timeline"], args.duration_s - 10)
    return row


def fmt(v: Any, spec: str = ".4f") -> str:
    return "-" if v is None else format(v, spec)


def print_row(r: dict[str, Any]) -> None:
    diff = (None if r["server_slo_attainment"] is None
            else r["server_slo_attainment"] - r["slo_attainment"])
    last = f" {fmt(r.get('slo_attainment_last_10s')):>8s}" if "hog_at_s" in r else ""
    print(f"{name_column(r['policy'])} {r['rate']:6.0f} {r['slo_attainment']:8.4f} "
          f"{fmt(r['server_slo_attainment']):>8s} {fmt(diff, '+.4f'):>8s} "
          f"{100 * r['profiled_accuracy']:7.2f}% {100 * r['realized_accuracy']:7.2f}% "
          f"{fmt(r['latency_ms_p99'], '.1f'):>7s} {r['max_send_lag_ms']:7.1f}{last}  "
          f"{json.dumps(r['outcomes'], separators=(',', ':'))}", flush=True)
    if r.get("server_cpu_us_per_request") is not None:
        print(f"{'':24s}CPU per request: router process {r['router_cpu_us_per_request']:.0f} us, "
              f"server tree (router + workers) {r['server_cpu_us_per_request']:.0f} us, client "
              f"process {r.get('client_cpu_us_per_request', float('nan')):.0f} us (start-up "
              "and warm-up included)")
    n = r.get("worker_cpu_noise")
    if n is not None:
        print(f"{'':24s}CPU 1 just before: {'steady' if n['steady'] else 'NOT steady'}, "
              f"{n['stalls_per_s']:.1f} stalls/s (>= {n['stall_ms']:g} ms, longest "
              f"{n['longest_stall_ms']:.0f} ms), swing x{n['swing']:.2f} over {n['seconds']:.0f} s")
    if r.get("late_at_door"):
        print(f"{'':24s}refused late at the door (504, body never decoded): "
              f"{r['late_at_door']:.0f}")
    q = r["batch_ratio_observed_over_planned"]
    print(f"{'':24s}observed/planned batch time over the run: p50 <= {fmt(q['p50'], '.2f')}, "
          f"p99 <= {fmt(q['p99'], '.2f')} ({q['batches']:.0f} batches)")
    if r.get("plan_rules"):
        print(f"{'':24s}batches by planning rule: {format_rules(r['plan_rules'])}")
    for k, v in r["calibration"].items():  # histograms stay in the JSON
        if not re.search(r"_(bucket|created|sum|count)\b", k):
            print(f"{'':24s}{k} {v:.6g}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    last = f" {'last 10s':>8s}" if args.hog_at is not None else ""
    print(f"{'policy':16s} {'rate':>6s} {'client':>8s} {'server':>8s} {'srv-cli':>8s} "
          f"{'prof.acc':>8s} {'real.acc':>8s} {'p99 ms':>7s} {'lag ms':>7s}{last}  outcomes",
          flush=True)
    rows: list[dict[str, Any]] = []
    work = args.out.parent / f"{args.out.stem}.logs"  # server logs, client reports
    work.mkdir(parents=True, exist_ok=True)
    try:
        for rep, rate, policy in cells(args.policies, args.rates, args.reps):
            row = run_cell(policy, rate, args, work, rep)
            rows.append(row)
            print_row(row)
        if args.reps > 1:
            print_summary(summarize_rows(rows))
    except KeyboardInterrupt:
        print("interrupted: stopping every server, client and hog", file=sys.stderr)
        return 130
    finally:
        cleanup()
        doc = {"config": {k: (str(v) if isinstance(v, Path) else v)
                          for k, v in vars(args).items()}, "rows": rows,
               "summary": summarize_rows(rows)}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    if args.json:
        print(json.dumps(doc))
    print(f"rows in {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
