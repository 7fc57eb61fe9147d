"""The workers' warm-up plan (runtime/warmup.py): which subnets run at every batch size so that
no served batch builds a kernel, found from the calls each subnet makes."""

from __future__ import annotations

import pytest

from superserve.runtime.warmup import cover, kernel_signature, warm_plan


def test_cover_holds_every_entry_and_prefers_cheap_subnets():
    sigs = [frozenset("ab"), frozenset("bc"), frozenset("abc"), frozenset("d")]
    # the one subnet that holds a, b and c costs more than the two that share them
    assert cover(sigs, [1.0, 1.0, 5.0, 1.0]) == [0, 1, 3]
    # cheap enough, it alone replaces them
    assert cover(sigs, [1.0, 1.0, 1.2, 1.0]) == [2, 3]
    got = cover(sigs, [3.0, 2.0, 9.0, 0.5])
    assert set().union(*(sigs[i] for i in got)) == set("abcd")
    assert cover([], []) == []
    with pytest.raises(ValueError, match="costs"):
        cover(sigs, [1.0])


def test_warm_plan_runs_the_profiled_sizes_of_all_and_every_size_of_the_covering():
    base, extra = warm_plan(3, (1, 4), 5, [2, 0])
    assert base == [(0, 1), (0, 4), (1, 1), (1, 4), (2, 1), (2, 4)]
    assert extra == [(2, 2), (2, 3), (2, 5), (0, 2), (0, 3), (0, 5)]  # in the cover's order


def test_kernel_signature_keeps_the_calls_that_follow_the_batch():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    w = torch.zeros(8, 4, 3, 3)
    cache: dict[int, torch.Tensor] = {}

    def net(width: int):  # a weight-shared layer at two widths, and a one-time unpacking
        def forward(b: int):
            if width not in cache:
                cache[width] = torch.ones(width).mul(2.0)
            x = torch.zeros(b, 4, 6, 6)
            return F.conv2d(x, w[:width]).relu().mean(dim=(2, 3)) * cache[width]
        return forward

    narrow, narrow_again, wide = (kernel_signature(net(k)) for k in (4, 4, 8))
    assert narrow == narrow_again  # the cache filled on the first call leaves no trace
    # they share the input's shape only: the layer's calls differ at the two widths
    assert narrow and wide and all("zeros" in e[0] for e in narrow & wide)
    assert any("conv2d" in e[0] for e in narrow - wide)
    # the unpacking ran once, at the first call: not a per-batch kernel
    assert not any(e[0].endswith("ones") or e[1][:1] == (("T", (4,), "torch.float32", True),)
                   for e in narrow)


def test_the_covering_subnets_run_every_kernel_of_the_shipped_resnet():
    """On the shipped resnet table: the covering subnets' batch-following calls include every
    other subnet's, so after the warm-up no batch size of any subnet meets a new shape; and
    they are fewer than all (the warm-up is cheaper than every subnet at every size)."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from superserve.models import load_supernet
    from superserve.profiling.table import ProfileTable
    from superserve.server.components import resolve_table

    table, path, norm = resolve_table("resnet", None, check_family=True)
    table = ProfileTable.load(path)
    net = load_supernet("resnet", map_location="cpu").eval()
    from superserve.subnetact import NormStore

    net.norm_store = NormStore.load(norm)
    specs = [net.space.spec_from_dict(dict(s.spec)) for s in table.subnets]
    shape = tuple(net.input_spec.shape)

    def forward(spec):
        return lambda b: net(torch.from_numpy(np.zeros((b, *shape), np.float32)), spec)

    with torch.inference_mode():
        sigs = [kernel_signature(forward(s)) for s in specs]
    chosen = cover(sigs, [table.latency_s(i, table.max_batch) for i in range(len(specs))])
    covered = frozenset().union(*(sigs[i] for i in chosen))
    assert all(sig <= covered for sig in sigs)
    assert 0 < len(chosen) < len(specs)
