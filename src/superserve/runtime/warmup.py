"""Which (subnet, batch size) calls a torch worker makes before it reports ready.

The first call of a kernel at a new shape builds it (oneDNN on a CPU, cuDNN's choice on a
GPU): measured on the shipped resnet, one thread, 3-7 ms more than the call after it, at
every batch size nobody had run yet. Served batches come in every size from 1 to the table's
largest, so without a warm-up at every size serving pays that whenever a plan first meets a
size, on batches the router planned to the millisecond (interleaved live runs at 1,500-2,000
req/s, 2026-11-29: four of five runs without it had seconds at 0.29-0.97 attainment well into
the run; with it, none below 0.98 after the first second in three runs).

The kernels are per layer shape, not per subnet: subnets that share a layer's widths share its
kernel. Running every subnet at every size (37 x 32 for the resnet: ~15 s on one core) is
mostly wasted work. `kernel_signature` records, from a batch-1 and a batch-2 call of a
subnet, the torch calls whose argument shapes follow the batch; `cover` picks a few subnets,
cheapest first per new call, whose calls include every other subnet's; those run at every
batch size, the rest at the profiled sizes only (their own first calls, and the start-up
probe's figures). The sizes beyond the profiled ones run within a time budget
(WorkerConfig.warmup_budget_s): ~6.5 s for the shipped resnet on one core (16 of its 37
subnets), within the default 30 s; a large model on a slow device stops there and says how
far it got.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

__all__ = ["cover", "kernel_signature", "warm_plan"]


def _describe(a: Any) -> Hashable:
    """What of an argument picks the kernel: a tensor's shape, dtype and layout; scalars and
    tuples as they are; anything else by its type."""
    import torch

    if isinstance(a, torch.Tensor):
        return ("T", tuple(a.shape), str(a.dtype), a.is_contiguous())
    if isinstance(a, (list, tuple)):
        return tuple(_describe(x) for x in a)
    if a is None or isinstance(a, (bool, int, float, str)):
        return a
    return type(a).__name__


def _calls(call: Callable[[], Any]) -> set[Hashable]:
    from torch.overrides import TorchFunctionMode

    seen: set[Hashable] = set()

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__qualname__", None) or repr(func)
            if not name.endswith("__get__"):  # .shape and the like: no kernel
                seen.add((name, _describe(tuple(args)),
                          tuple(sorted((k, _describe(v)) for k, v in kwargs.items()))))
            return func(*args, **kwargs)

    with Record():
        call()
    return seen


def kernel_signature(call: Callable[[int], Any]) -> frozenset[Hashable]:
    """The torch calls that `call(batch)` makes at batch 1 and not at batch 2, each with what
    picks its kernel (argument shapes, dtypes, layout and scalars): the calls whose shapes
    follow the batch. Two subnets whose signatures hold the same entry run that kernel at the
    same shape at every batch size; the calls that do not follow the batch (a subnet's own
    normalization statistics unpacked on first use, say) are left out: their first call at
    any size builds them."""
    at_two = _calls(lambda: call(2))  # first: what runs once (a cache filled) lands here
    return frozenset(_calls(lambda: call(1)) - at_two)


def cover(signatures: Sequence[frozenset[Hashable]], costs: Sequence[float]) -> list[int]:
    """A small set of subnets whose signatures hold every entry of all of them, in the order
    picked: greedy, each step the subnet with the most new entries per unit of cost (ties: the
    lower index). Pure."""
    if len(signatures) != len(costs):
        raise ValueError(f"{len(signatures)} signatures but {len(costs)} costs")
    left: set[Hashable] = set().union(*signatures) if signatures else set()
    chosen: list[int] = []
    while left:
        best, score = -1, 0.0
        for i, sig in enumerate(signatures):
            new = len(sig & left)
            if new and new / max(costs[i], 1e-12) > score:
                best, score = i, new / max(costs[i], 1e-12)
        chosen.append(best)
        left -= signatures[best]
    return chosen


def warm_plan(n_subnets: int, profiled_sizes: Sequence[int], max_batch: int,
              covering: Sequence[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The warm-up's (subnet, batch) calls in two parts: every subnet at the profiled sizes
    (always run), then the `covering` subnets, in their order, at the other sizes from 1 to
    `max_batch` (run while the warm-up budget lasts). Pure."""
    profiled = sorted(set(profiled_sizes))
    base = [(i, b) for i in range(n_subnets) for b in profiled]
    extra = [(i, b) for i in covering for b in range(1, max_batch + 1) if b not in profiled]
    return base, extra
