"""SIGTERM to a client command (here `superserve loadgen` against a server it did not start,
and `superserve bench soak`, which starts its own server) unwinds like Ctrl-C: the command
exits with 143 and leaves no server of its own running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _children_of(pid: int) -> set[int]:
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(p.name))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_sigterm_to_a_command_that_started_a_server_stops_that_server(tmp_path):
    env = {**os.environ, "CI": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "superserve.cli", "bench", "soak",
                             "--duration", "60", "--json"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        servers: set[int] = set()
        end = time.monotonic() + 90
        while time.monotonic() < end and not servers:  # its server is up
            servers = {c for c in _children_of(proc.pid)
                       if b"serve" in Path(f"/proc/{c}/cmdline").read_bytes()}
            time.sleep(0.2)
        assert servers, "the soak never started its server"
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143
        end = time.monotonic() + 30
        while time.monotonic() < end and any(_alive(s) for s in servers):
            time.sleep(0.1)
        left = [Path(f"/proc/{s}/cmdline").read_bytes()[:200] for s in servers if _alive(s)]
        assert not left, f"outlived its command: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()


HUNG_UNWIND = """
import os, signal, subprocess, sys, time
from superserve import cli
from superserve.bench import server_proc
cli.TERMINATE_GRACE_S = 1.0
signal.signal(signal.SIGTERM, cli._terminate)
child = subprocess.Popen(["sleep", "300"], start_new_session=True)
server_proc._RUNNING.add(child.pid)
try:  # the SIGTERM may come as soon as the pid is out
    print(child.pid, flush=True)
    time.sleep(60)
except cli._Terminated:
    time.sleep(60)  # an unwinding that hangs
"""


def test_a_hung_unwinding_after_sigterm_kills_its_servers_and_exits_143():
    proc = subprocess.Popen([sys.executable, "-c", HUNG_UNWIND], stdout=subprocess.PIPE,
                            text=True)
    try:
        child = int(proc.stdout.readline())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
        end = time.monotonic() + 10
        while time.monotonic() < end and _alive(child):
            time.sleep(0.05)
        assert not _alive(child), "the started server outlived the forced exit"
    finally:
        if proc.poll() is None:
            proc.kill()
