"""Devices: what a subnet's forward uses follows the model (`.to(dtype)` on the CPU here, a GPU
where one exists), worker i's device and CPU set, the input stager, the profiler's device."""

import os

import numpy as np
import pytest
import torch

from superserve.errors import ConfigError
from superserve.models import build_supernet
from superserve.models.configs import default_train_config
from superserve.runtime.devices import (
    Stager,
    check_device,
    parse_cpu_list,
    parse_devices,
    worker_cpus,
    worker_device,
)
from superserve.runtime.worker import WorkerConfig
from superserve.subnetact import NormStore

OFA_TINY = {"resolutions": [32, 40], "image_size": 40, "num_classes": 3}
FAMILIES = ["resnet", "vit", "ofa_mbv3", "ofa_resnet50"]
DEVICES = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def tiny(family):
    torch.manual_seed(0)
    cfg = OFA_TINY if family.startswith("ofa") else default_train_config(family, quick=True).model
    net = build_supernet(family, cfg).eval()
    with torch.no_grad():  # non-trivial gamma/beta so the statistics matter
        for name, p in net.named_parameters():
            if name.endswith(("weight", "bias")) and p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return net


def images(net, n, seed=0):
    s = net.input_spec
    return torch.rand(n, s.channels, s.height, s.width, generator=torch.Generator().manual_seed(seed))


def specs_of(net):
    # the smallest subnet at kernel 3 exercises ElasticDepthwise's cached transformed filters
    return [net.space.largest(), net.space.smallest()]


# ------------------------------------------------------------------ the model follows .to()
@pytest.mark.parametrize("family", FAMILIES)
def test_double_forward_matches_float32_and_uses_float64_statistics(family):
    net = tiny(family)
    specs = specs_of(net)
    net.calibrate(specs, images(net, 24), n=24)
    x = images(net, 3, seed=1)
    with torch.inference_mode():
        ref = [net(x, s) for s in specs]  # float32; fills every cache in float32
    old_dtype = net.norm_store.dtype if net.uses_norm_stats else None
    net64 = net.double()  # in place, as a worker does: a copy would rebuild the caches anyway
    with torch.inference_mode():
        for s, r in zip(specs, ref):
            y = net64(x.double(), s)
            assert y.dtype == torch.float64
            torch.testing.assert_close(y, r.double(), rtol=1e-3, atol=1e-3)
    if net.uses_norm_stats:
        store = net64.norm_store
        assert isinstance(store, NormStore) and store.compute_dtype == torch.float64
        means, variances = store.get(specs[0])
        assert all(m.dtype == torch.float64 for m in means + variances)
        assert store.dtype == old_dtype  # storage stays compact


@pytest.mark.parametrize("family", ["resnet", "ofa_mbv3"])
def test_calibration_follows_the_model_dtype_and_round_trips(family, tmp_path):
    net = tiny(family).double()
    spec = net.space.smallest()
    net.calibrate([spec], images(net, 16), n=16)  # float32 host images, float64 model
    with torch.inference_mode():
        y64 = net(images(net, 2, seed=3).double(), spec)
    net.norm_store.save(tmp_path / "norm.pt")
    back = NormStore.load(tmp_path / "norm.pt")
    assert back.device == torch.device("cpu") and back.has(spec)
    net.float()
    net.norm_store = back
    with torch.inference_mode():
        y32 = net(images(net, 2, seed=3), spec)
    torch.testing.assert_close(y32.double(), y64, rtol=1e-2, atol=1e-2)


def test_norm_store_is_a_submodule_without_state_dict_entries():
    net = tiny("resnet")
    keys = set(net.state_dict())
    assert "norm_store" in dict(net.named_children())
    assert not any(k.startswith("norm_store") for k in keys)
    sub = net.double().norm_store.subset([])
    assert sub.compute_dtype == torch.float64  # a subset (materialize) follows its parent


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", FAMILIES)
def test_forward_on_each_device_matches_the_cpu(family, device):
    net = tiny(family)
    specs = specs_of(net)
    net.calibrate(specs, images(net, 16), n=16)
    x = images(net, 2, seed=2)
    with torch.inference_mode():
        ref = [net(x, s) for s in specs]
    moved = net.to(device)
    stager = Stager(device)
    with torch.inference_mode():
        for s, r in zip(specs, ref):
            y = moved(stager.to_device(x.numpy()), s)
            assert y.device == torch.device(device)
            torch.testing.assert_close(y.cpu(), r, rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------ device per worker
def test_worker_device_rules():
    assert worker_device("auto", (), 3, cuda_count=0) == "cpu"
    assert worker_device("cpu", (), 1, cuda_count=2) == "cpu"
    assert [worker_device("auto", (), i, cuda_count=2) for i in range(4)] == [
        "cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert [worker_device("cuda", ("cuda:1", "cpu"), i, cuda_count=2) for i in range(3)] == [
        "cuda:1", "cpu", "cuda:1"]
    with pytest.raises(ConfigError, match="no CUDA"):
        worker_device("cuda", (), 0, cuda_count=0)
    with pytest.raises(ConfigError, match="cuda:2"):
        worker_device("auto", ("cuda:2",), 0, cuda_count=2)


def test_device_names_are_validated():
    assert parse_devices("cuda:0, cuda:1") == ("cuda:0", "cuda:1")
    assert check_device("cpu") == "cpu"
    for bad in ("gpu", "cuda:", "cuda:x", ""):
        with pytest.raises(ConfigError):
            check_device(bad)
    with pytest.raises(ConfigError):
        parse_devices(" , ")
    with pytest.raises(ConfigError, match="device"):
        WorkerConfig(kind="noop", devices=("tpu",))
    assert WorkerConfig(kind="noop", devices=("cpu", "cuda:1")).devices == ("cpu", "cuda:1")


def test_serve_flag_reaches_the_config():
    import argparse

    from superserve.commands import serve
    from superserve.server.config import ServeConfig

    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    args = p.parse_args(["--devices", "cuda:0,cuda:1"])
    assert parse_devices(args.devices) == ("cuda:0", "cuda:1")
    with pytest.raises(ConfigError):
        ServeConfig(devices=("npu",))


# ------------------------------------------------------------------ CPUs per worker
def test_each_worker_gets_a_group_of_threads_cpus():
    cpus = [1, 2, 3, 4, 5, 6]
    assert [worker_cpus(cpus, 2, i) for i in range(4)] == [{1, 2}, {3, 4}, {5, 6}, {1, 2}]
    assert [worker_cpus([1, 2, 3], 2, i) for i in range(3)] == [{1, 2}, {3, 1}, {2, 3}]
    assert worker_cpus([0, 1], 1, 3) == {1}  # one thread: the old (i mod n) rule
    assert worker_cpus([4, 5], 8, 0) == {4, 5}  # more threads than CPUs: all of them
    with pytest.raises(ConfigError):
        worker_cpus([], 1, 0)


def test_cpu_lists_parse_ranges():
    assert parse_cpu_list("1,2,4-6") == [1, 2, 4, 5, 6]
    assert parse_cpu_list("3, 1,3") == [3, 1]
    for bad in ("", "a", "3-1", "-1", "1,,x"):
        with pytest.raises(ConfigError):
            parse_cpu_list(bad)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pin_workers_validates_and_exports(monkeypatch):
    from superserve.commands.serve import _pin_workers

    monkeypatch.delenv("SUPERSERVE_WORKER_CPUS", raising=False)
    _pin_workers("0")
    assert parse_cpu_list(os.environ["SUPERSERVE_WORKER_CPUS"]) == [0]
    with pytest.raises(ConfigError):
        _pin_workers(f"0-{(os.cpu_count() or 1) + 3}")


# ------------------------------------------------------------------ inputs and timing
def test_stager_on_the_cpu_is_a_zero_copy_view():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = Stager("cpu").to_device(a)
    assert x.device.type == "cpu" and x.data_ptr() == a.ctypes.data
    Stager("cpu").synchronize()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stager_on_cuda_copies_every_batch_intact():
    st = Stager("cuda:0")
    batches = [np.random.default_rng(i).random((i + 1, 3, 8, 8), dtype=np.float32)
               for i in range(6)]
    outs = [st.to_device(b) for b in batches]  # buffers alternate and grow
    st.synchronize()
    for b, x in zip(batches, outs):
        assert x.is_cuda and np.array_equal(x.cpu().numpy(), b)


def test_timing_calls_sync_inside_the_timed_region():
    from superserve.profiling.timing import measure_interleaved

    events = []
    t = iter(range(100))
    res = measure_interleaved([lambda: events.append("fn")], repeats=2, warmup=1,
                              clock=lambda: float(next(t)), sync=lambda: events.append("sync"))
    assert events == ["fn", "sync"] * 3
    assert res[0][0] == 1.0  # each timed call spans one clock tick: fn + sync inside it


def test_profiler_validates_its_device():
    from superserve.profiling.passes import device_description
    from superserve.profiling.profiler import ProfileConfig, profile_supernet

    with pytest.raises(ConfigError, match="device"):
        ProfileConfig(device="gpu")
    assert ProfileConfig(device="cuda:1").device == "cuda:1"
    assert device_description(torch.device("cpu")) == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            profile_supernet(tiny("resnet"), ProfileConfig(device="cuda"))


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
@pytest.mark.parametrize("threads,worker_id", [(2, 0), (1, 1)])
def test_a_worker_process_pins_itself_to_its_group(monkeypatch, threads, worker_id):
    import multiprocessing as mp

    from superserve.runtime.worker import worker_main

    cpus = sorted(os.sched_getaffinity(0))[:2]
    monkeypatch.setenv("SUPERSERVE_WORKER_CPUS", ",".join(map(str, cpus)))
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    p = ctx.Process(target=worker_main, args=(theirs, WorkerConfig(kind="noop", threads=threads),
                                              worker_id))
    p.start()
    try:
        assert ours.poll(60), "the worker did not report ready"
        kind, info = ours.recv()
        assert kind == "ready"
        assert os.sched_getaffinity(info["pid"]) == worker_cpus(cpus, threads, worker_id)
        ours.send(("stop",))
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
