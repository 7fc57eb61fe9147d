"""benchmarks/kill_loop.py's process bookkeeping: every process below a pid (the router's
workers and theirs), and a zombie counts as gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import kill_loop

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="/proc")


def test_descendants_reach_grandchildren_and_dead_ones_are_not_alive():
    # a child that starts a grandchild and prints its pid
    child = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "g = subprocess.Popen(['sleep', '30'])\n"
        "print(g.pid, flush=True)\n"
        "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = int(child.stdout.readline())
        below = kill_loop._descendants(os.getpid())
        assert child.pid in below and grandchild in below
        assert kill_loop._alive(grandchild)
        os.kill(grandchild, 9)  # its parent has not reaped it: a zombie, gone for us
        end = time.monotonic() + 5
        while kill_loop._alive(grandchild) and time.monotonic() < end:
            time.sleep(0.02)
        assert not kill_loop._alive(grandchild)
    finally:
        child.kill()
        child.wait(5)
    assert not kill_loop._alive(child.pid)
