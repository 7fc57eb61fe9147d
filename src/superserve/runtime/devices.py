"""Where a worker runs: its device, its CPUs, and how a batch reaches the device.

- `worker_device(device, devices, index, cuda_count)`: worker i uses devices[i mod n]; with no
  list, every visible CUDA device in turn when `device` is auto or cuda and CUDA exists, else
  the CPU.
- `ray_worker_device(device, devices, index, gpu_ids, cuda_count)`: the same choice for Ray
  actor i, resolved inside the actor, where the GPUs Ray assigned it are cuda:0.. (Ray sets
  CUDA_VISIBLE_DEVICES to them).
- `worker_cpus(cpus, threads, index)`: worker i is pinned to the i-th group of `threads` CPUs
  of the list (wrapping), so each of its torch threads has a CPU of its own.
- `widen_kernel_cache()`: oneDNN's kernel cache made large enough for every subnet at every
  batch size, in any process that runs many shapes of a supernet (worker, profiler, re-timing).
- `Stager`: a batch from host memory to the device. On the CPU a zero-copy view; on CUDA
  through a pinned host buffer and a side stream (an asynchronous DMA that the compute stream
  waits for on the device, not on the host), so the copy of one batch can overlap the compute
  of another.

Everything but `Stager` is pure and imports without torch (the router and noop workers use it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from superserve.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["ONEDNN_CACHE_CAPACITY", "Stager", "check_device", "parse_cpu_list", "parse_devices",
           "ray_worker_device", "widen_kernel_cache", "worker_cpus", "worker_device"]

# oneDNN (torch's CPU convolutions) keeps the kernels it built per layer and input shape in an
# LRU cache of 1,024 by default, and a miss rebuilds one. Serving every subnet at every batch
# size needs ~10,000 for the shipped resnet (37 subnets x 32 batch sizes x its layers): 4,000
# batches of a random mix of subnets and batch sizes took 67 s at the default and 49 s at
# 8,192 or more (one thread; sorted by shape, 49 s either way), for ~25 MB more memory. A
# value the user exported wins.
ONEDNN_CACHE_CAPACITY = 65536

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def widen_kernel_cache() -> None:
    """Let oneDNN keep `ONEDNN_CACHE_CAPACITY` kernels (unless the user exported a capacity).
    oneDNN reads the variable when it builds its first kernel, so call this before the
    process's first convolution. Timing that cycles through more kernels than the default
    1,024 would rebuild them in every round and measure the rebuilds: `profile
    --latency-only` runs every subnet at every profiled batch size in each round (786
    kernels for the shipped resnet's 37 x 6, under the default; a table with more subnets or
    batch sizes is not), and 13 of its subnets at every size 1-16 already need 1,376
    (counted with ONEDNN_VERBOSE=profile_create, 2026-11-30)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))


def check_device(name: str) -> str:
    """`name` if it names a device a worker can use (cpu, cuda, cuda:N), else ConfigError."""
    if not isinstance(name, str) or not _DEVICE.match(name):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {name!r}")
    return name


def parse_devices(text: str) -> tuple[str, ...]:
    """'cuda:0,cuda:1' -> ('cuda:0', 'cuda:1') (the `--devices` flag), validated."""
    names = tuple(d.strip() for d in text.split(",") if d.strip())
    if not names:
        raise ConfigError(f"--devices must name at least one device, got {text!r}")
    return tuple(check_device(d) for d in names)


def worker_device(device: str, devices: Sequence[str], index: int, cuda_count: int) -> str:
    """The device of worker `index`. `device`: auto | cpu | cuda (the default rule);
    `devices`: an explicit list, used round-robin; `cuda_count`: visible CUDA devices."""
    if index < 0:
        raise ConfigError(f"worker index must be >= 0, got {index}")
    if devices:
        name = check_device(devices[index % len(devices)])
        if name.startswith("cuda"):
            n = int(name.partition(":")[2] or 0)
            if n >= cuda_count:
                raise ConfigError(f"worker {index} is to use {name}, but this machine has "
                                  f"{cuda_count} visible CUDA device(s)")
        return name
    if device == "cpu" or (device == "auto" and cuda_count == 0):
        return "cpu"
    if device not in ("auto", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    if cuda_count == 0:
        raise ConfigError("device cuda was asked for, but no CUDA device is visible")
    return f"cuda:{index % cuda_count}"


def ray_worker_device(device: str, devices: Sequence[str], index: int,
                      gpu_ids: Sequence[str], cuda_count: int) -> str:
    """The device of Ray worker `index`, inside its actor. `gpu_ids`: the GPUs Ray assigned
    the actor (ray.get_gpu_ids()); `cuda_count`: the CUDA devices the actor sees.

    Worker i chooses as a local one does: devices[i mod n], else `device`. An actor that
    reserves GPUs (`--worker-gpus` > 0) sees only those, numbered from 0 (Ray sets its
    CUDA_VISIBLE_DEVICES), so a CUDA choice (cuda, cuda:N, or auto) runs on cuda:0, the
    first GPU Ray gave it: N numbers the GPUs of the machine the flags were written for,
    and Ray has chosen which GPU of which node this worker gets. An actor that reserves
    none sees its node's GPUs (Ray 2.60 leaves CUDA_VISIBLE_DEVICES alone then): auto is
    the CPU (a GPU that Ray did not reserve may be in use by anything), and an explicit
    cuda / cuda:N follows the local rule on the node's own numbering (worker_device)."""
    if index < 0:
        raise ConfigError(f"worker index must be >= 0, got {index}")
    name = check_device(devices[index % len(devices)]) if devices else device
    if name not in ("auto", "cpu") and not name.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    if gpu_ids:
        if cuda_count == 0:
            raise ConfigError(f"Ray assigned GPU(s) {list(gpu_ids)} to worker {index}, but "
                              "no CUDA device is visible in its actor")
        return "cpu" if name == "cpu" else "cuda:0"
    if name in ("auto", "cpu"):
        return "cpu"
    try:
        return worker_device("cuda", (name,) if ":" in name else (), index, cuda_count)
    except ConfigError as e:
        raise ConfigError(f"{e} (a Ray worker reserves no GPU unless asked: "
                          "--worker-gpus)") from None


def parse_cpu_list(text: str) -> list[int]:
    """'1,2,4-7' -> [1, 2, 4, 5, 6, 7] (Linux cpulist syntax, order kept, no repeats)."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            ids = range(int(lo), int(hi) + 1) if sep else [int(lo)]
            if sep and int(hi) < int(lo):
                raise ValueError(part)
            out.extend(i for i in ids if i not in out)
    except ValueError:
        out = []
    if not out or min(out) < 0:
        raise ConfigError(f"a CPU list must be comma-separated CPU ids or ranges (1,2,4-7), "
                          f"got {text!r}")
    return out


def worker_cpus(cpus: Sequence[int], threads: int, index: int) -> set[int]:
    """The CPUs worker `index` is pinned to: the index-th group of `threads` consecutive
    entries of `cpus`, wrapping around the list (more threads than CPUs: all of them)."""
    if not cpus:
        raise ConfigError("worker_cpus needs a non-empty CPU list")
    if threads < 1 or index < 0:
        raise ConfigError(f"threads must be >= 1 and index >= 0, got {threads}, {index}")
    n = len(cpus)
    return {cpus[(index * threads + k) % n] for k in range(min(threads, n))}


class Stager:
    """Moves batches (host arrays) to one device.

    CPU: `torch.from_numpy` (no copy). CUDA: the batch is copied into one of two pinned host
    buffers (grown to the largest batch seen; two, so a host write never lands in a buffer
    whose DMA is still in flight), then to the device with a non-blocking copy on a side
    stream; the current (compute) stream waits for that copy on the device. The host does not
    wait for the copy, so a caller that stages batch k+1 while batch k computes overlaps them.
    """

    def __init__(self, device: str | torch.device) -> None:
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._events: list[Any] = [None, None]
        self._next = 0
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None

    def to_device(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The batch as a tensor on the device (its dtype and shape unchanged)."""
        import numpy as np
        import torch

        host = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(
            images, np.ndarray) else images.contiguous()
        if not self.cuda:
            return host.to(self.device)
        i, self._next = self._next, 1 - self._next
        buf = self._buffers[i]
        nbytes = host.numel() * host.element_size()
        if buf is None or buf.numel() < nbytes:
            buf = self._buffers[i] = torch.empty(max(nbytes, 1), dtype=torch.uint8,
                                                 pin_memory=True)
        elif self._events[i] is not None:
            self._events[i].synchronize()  # the last DMA out of this buffer has finished
        staged = buf[:nbytes].view(host.dtype).view(host.shape)
        staged.copy_(host)
        compute = torch.cuda.current_stream(self.device)
        assert self._stream is not None
        with torch.cuda.stream(self._stream):
            x = staged.to(self.device, non_blocking=True)
            self._events[i] = torch.cuda.Event()
            self._events[i].record(self._stream)
        compute.wait_stream(self._stream)
        x.record_stream(compute)  # allocated on the side stream, used on the compute stream
        return x

    def synchronize(self) -> None:
        """Wait until the device has finished all queued work (timing; no-op on the CPU)."""
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
