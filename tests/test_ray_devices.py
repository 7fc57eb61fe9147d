"""Which device Ray worker i runs on (runtime/devices.ray_worker_device), on the CPU: the
choice is the local pool's (devices[i mod n], else --device), resolved against the GPUs Ray
assigned the actor (cuda:0 inside it) or, with none assigned, against the node's own."""

from __future__ import annotations

import pytest

from superserve.errors import ConfigError
from superserve.runtime.devices import ray_worker_device, worker_device


@pytest.mark.parametrize("devices", [("cuda:1",), ("cuda:0", "cuda:1"), ("cuda:3", "cuda")])
def test_reserved_gpus_are_cuda0_inside_the_actor(devices):
    # one GPU reserved per actor: whatever index the flags name, the actor sees one GPU
    for i in range(5):
        assert ray_worker_device("auto", devices, i, ["5"], 1) == "cuda:0"
    # several reserved (or a fraction of one shared): still the first of them
    assert ray_worker_device("auto", devices, 1, ["2", "3"], 2) == "cuda:0"


def test_reserved_gpus_and_the_device_rule():
    for device in ("auto", "cuda"):
        assert [ray_worker_device(device, (), i, ["0"], 1) for i in range(3)] == ["cuda:0"] * 3
    assert ray_worker_device("cpu", (), 0, ["0"], 1) == "cpu"
    # a list mixing the CPU and GPUs: worker i still takes devices[i mod n]
    assert [ray_worker_device("auto", ("cpu", "cuda:1"), i, ["7"], 1) for i in range(4)] \
        == ["cpu", "cuda:0", "cpu", "cuda:0"]
    with pytest.raises(ConfigError, match="no CUDA device is visible"):
        ray_worker_device("auto", (), 0, ["0"], 0)


def test_no_reserved_gpu_follows_the_local_rule_on_the_node():
    # with no GPU reserved the actor sees its node's GPUs: explicit names keep their index,
    # round-robin by worker id exactly like the local pool
    devices = ("cuda:0", "cuda:1", "cpu")
    assert [ray_worker_device("auto", devices, i, [], 2) for i in range(6)] \
        == [worker_device("auto", devices, i, 2) for i in range(6)] \
        == ["cuda:0", "cuda:1", "cpu", "cuda:0", "cuda:1", "cpu"]
    assert [ray_worker_device("cuda", (), i, [], 2) for i in range(3)] \
        == ["cuda:0", "cuda:1", "cuda:0"]
    # auto is the CPU: a GPU that Ray did not reserve for the actor is not taken
    assert ray_worker_device("auto", (), 1, [], 4) == "cpu"
    assert ray_worker_device("cpu", (), 0, [], 4) == "cpu"
    assert [ray_worker_device("auto", ("cpu",), i, [], 0) for i in range(2)] == ["cpu"] * 2


def test_no_reserved_gpu_and_a_gpu_the_node_lacks():
    with pytest.raises(ConfigError, match="--worker-gpus"):
        ray_worker_device("auto", ("cuda:1",), 0, [], 1)
    with pytest.raises(ConfigError, match="--worker-gpus"):
        ray_worker_device("cuda", (), 0, [], 0)
    with pytest.raises(ConfigError, match="device must be"):
        ray_worker_device("auto", ("tpu",), 0, [], 0)
    with pytest.raises(ConfigError, match="index"):
        ray_worker_device("auto", (), -1, [], 0)
