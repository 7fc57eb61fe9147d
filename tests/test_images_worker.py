"""Serving a user's OFA supernet (issue 13, item 5) below the server: a worker built from
`WorkerConfig(model="ofa_mbv3", weights=W.pth)` takes the family's input shape (3x224x224, not
1x28x28), runs the table's subnets with the statistics beside the table, and refuses clearly
(no MNIST fallback) when a served subnet has none; the serve configuration's parts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from superserve.errors import ConfigError
from superserve.profiling.table import ProfileTable, SubnetProfile


@pytest.fixture(scope="module")
def ofa_files(tmp_path_factory):
    """Random weights in OFA's published form, and a 2-subnet table (r=128) with its norms."""
    from superserve.models import build_supernet

    d = tmp_path_factory.mktemp("ofa")
    torch.manual_seed(0)
    net = build_supernet("ofa_mbv3").eval()
    torch.save({"state_dict": net.state_dict()}, d / "W.pth")
    small = net.space.smallest()
    other = dataclasses.replace(small, ks=(5,) * len(small.ks))
    rows = [SubnetProfile(id=i, spec=s.to_dict(), accuracy=0.5 + 0.1 * i,
                          latency_ms={1: 5.0 + i, 2: 9.0 + i}) for i, s in enumerate((small, other))]
    ProfileTable.build("ofa_mbv3", rows, (1, 2), device="cpu", threads=1).save(d / "T.json")
    net.store_shared_stats([small, other])
    net.norm_store.subset([small, other]).save(d / "T.norm.pt")
    return d, net, (small, other)


def _cfg(d, norm):
    from superserve.runtime.worker import WorkerConfig

    return WorkerConfig(kind="torch", model="ofa_mbv3", weights=str(d / "W.pth"),
                        table_path=str(d / "T.json"), norm_path=str(norm), device="cpu")


def test_worker_serves_the_users_weights_at_the_family_input_shape(ofa_files, monkeypatch):
    from superserve.runtime.devices import ONEDNN_CACHE_CAPACITY
    from superserve.runtime.runners import make_runner

    d, net, specs = ofa_files
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    run, info = make_runner(_cfg(d, d / "T.norm.pt"))
    assert tuple(info["image_shape"]) == (3, 224, 224) and info["family"] == "ofa_mbv3"
    # oneDNN's kernel cache holds every subnet at every batch size (1,024 by default)
    assert info["onednn_cache"] == str(ONEDNN_CACHE_CAPACITY)
    x = np.random.default_rng(0).random((2, 3, 224, 224), dtype=np.float32)
    out = run(1, x)
    assert out.shape == (2, 1000)
    with torch.inference_mode():
        ref = net(torch.from_numpy(x), specs[1]).numpy()  # same weights and statistics
    assert np.abs(out - ref).max() < 1e-4


def test_a_served_subnet_without_statistics_is_a_clear_error(ofa_files, tmp_path):
    from superserve.runtime.runners import make_runner

    d, _, _ = ofa_files
    with pytest.raises(ConfigError, match="superserve profile --model ofa_mbv3 --weights"):
        make_runner(_cfg(d, tmp_path / "missing.norm.pt"))


def test_serve_configuration_for_a_users_family(ofa_files, tmp_path):
    from superserve.server.components import model_io, resolve_table
    from superserve.server.config import ServeConfig

    d, _, _ = ofa_files
    io = model_io("ofa_mbv3", str(d / "W.pth"), max_images=16)
    assert io.image_shape == (3, 224, 224) and io.num_classes == 1000
    assert io.input_spec.resize == 256 and io.max_images == 16
    table, _path, norm = resolve_table("ofa_mbv3", str(d / "T.json"))
    assert table.family == "ofa_mbv3" and norm == d / "T.norm.pt"
    with pytest.raises(ConfigError, match="ships no table"):
        resolve_table("ofa_mbv3", None)
    with pytest.raises(ConfigError, match="profiles family 'ofa_mbv3', not model 'resnet'"):
        resolve_table("resnet", str(d / "T.json"))
    with pytest.raises(ConfigError, match="weights: no file"):
        ServeConfig(model="ofa_mbv3", weights=str(tmp_path / "nope.pth"))
    assert model_io("no_such_family", needs_model=False).image_shape == (1, 28, 28)
    with pytest.raises(ConfigError, match="ships no weights: pass --weights"):
        model_io("ofa_mbv3")
