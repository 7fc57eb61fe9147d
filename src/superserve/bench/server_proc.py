"""Start and stop a `superserve serve` process on 127.0.0.1 for live experiments.

The server runs in its own process group so that stopping it (SIGTERM, then SIGKILL after a
grace period) also reaps its worker processes.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from superserve.errors import SuperServeError

log = logging.getLogger(__name__)

__all__ = [
    "ServerProcess",
    "format_rules",
    "free_port",
    "kill_all",
    "parse_metrics",
    "plan_rules",
]

_SAMPLE = re.compile(r"^(superserve_[A-Za-z0-9_]+(?:\{[^}]*\})?)\s+(\S+)$")
_PLANS = "superserve_plans_total{rule=\""


def parse_metrics(text: str) -> dict[str, float]:
    """The `superserve_*` samples of a /metrics page, keyed by name and labels as written
    (`superserve_plans_total{rule="rate"}`)."""
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def plan_rules(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Batches dispatched between two scrapes by the policy rule that planned them (the
    deltas of `superserve_plans_total{rule=...}`; SlackFit: front, fastest, light, rate,
    guard, bucket; a one-rule policy: its name), largest first, none left out."""
    out = {}
    for k, v in after.items():
        if k.startswith(_PLANS):
            n = round(v - before.get(k, 0.0))
            if n > 0:
                out[k[len(_PLANS):-2]] = n
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def format_rules(rules: dict[str, int]) -> str:
    """`rate 85.7%, guard 10.6% (3130 batches)`: each rule's share, largest first."""
    n = sum(rules.values())
    shares = sorted(rules.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {100 * v / max(n, 1):.1f}%" for k, v in shares) + f" ({n} batches)"

_RUNNING: set[int] = set()  # process groups of the servers this process started and still owns


def kill_all() -> int:
    """SIGKILL the process group of every server this process started and has not stopped
    (the last resort of a command whose orderly unwinding hangs): how many were killed."""
    n = 0
    for pgid in list(_RUNNING):
        try:
            os.killpg(pgid, signal.SIGKILL)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
        _RUNNING.discard(pgid)
    return n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`with ServerProcess(["--policy", "slackfit"], log_path) as srv: srv.http_url ...`"""

    def __init__(self, args: Sequence[str], log_path: str | Path, ready_timeout_s: float = 180.0
                 ) -> None:
        self.args = list(args)
        self.log_path = Path(log_path)
        self.ready_timeout_s = ready_timeout_s
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "superserve.cli", "-v", "serve", "--host", "127.0.0.1",
               "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")
        log.info("starting server: %s", " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        _RUNNING.add(self.proc.pid)
        try:
            self._wait_ready()
        except BaseException:  # Ctrl-C or SIGTERM while it starts: no `with` exit runs
            self.stop()
            raise

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SuperServeError(f"the server exited with code {self.proc.returncode} before "
                                      f"it was ready; its log:\n{self.log_tail()}")
            try:
                r = httpx.get(f"{self.http_url}/v2/health/ready", timeout=1.0)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise SuperServeError(f"the server was not ready within {self.ready_timeout_s:.0f} s; "
                              f"its log:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        """The server's /metrics now (parse_metrics)."""
        import httpx

        return parse_metrics(httpx.get(f"{self.http_url}/metrics", timeout=5.0).text)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def worker_pids(self) -> list[int]:
        """PIDs of the server's worker processes (multiprocessing children, not its
        resource tracker)."""
        assert self.proc is not None
        out = []
        for pid in _children(self.proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "resource_tracker" not in cmd and "semaphore_tracker" not in cmd:
                out.append(pid)
        return out

    def stop(self, grace_s: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                log.warning("server did not exit %.0f s after SIGTERM; killing it", grace_s)
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        try:  # reap anything left in its process group (workers)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _RUNNING.discard(self.proc.pid)
        self._log.close()
        return self.proc.returncode


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return kids
