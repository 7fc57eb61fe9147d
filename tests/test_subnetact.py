"""SubNetAct operators on small supernets: equivalence with materialized subnets, SubnetNorm,
thread safety, spec validation, checkpoint round trip."""

import random
import threading

import pytest
import torch

from superserve.data import load_digits8
from superserve.errors import CheckpointError, ConfigError, InvalidSpecError
from superserve.models import build_supernet, load_checkpoint, load_supernet, save_checkpoint
from superserve.models.configs import default_train_config
from superserve.models.vit import kept_layers
from superserve.subnetact import (
    NormMode,
    NormStore,
    ResNetSpec,
    ViTSpec,
    materialize,
    spec_from_dict,
)

FAMILIES = ["resnet", "vit"]


def tiny(family):
    torch.manual_seed(0)
    net = build_supernet(family, default_train_config(family, quick=True).model)
    # give BN layers non-trivial gamma/beta so SubnetNorm statistics matter
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("weight", "bias")) and p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def digits():
    return load_digits8()


def calibrated(family, specs, digits):
    net = tiny(family)
    net.calibrate(specs, digits.train[0], n=500)
    return net


@pytest.mark.parametrize("family", FAMILIES)
def test_materialized_equals_supernet(family, digits):
    rng = random.Random(1)
    net = tiny(family)
    specs = [net.space.largest(), net.space.smallest()] + [net.space.sample(rng) for _ in range(6)]
    net.calibrate(specs, digits.train[0], n=300)
    x = torch.from_numpy(digits.test[0][:32])
    with torch.inference_mode():
        for spec in specs:
            m = materialize(net, spec)
            diff = (net(x, spec) - m(x)).abs().max().item()
            assert diff <= 1e-5, (spec, diff)
            assert sum(p.numel() for p in m.parameters()) <= \
                sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("extra", [{"stem_channels": 4}, {"pool": "mean"},
                                   {"stem_channels": 4, "pool": "mean"}])
def test_materialized_vit_variants_equal_supernet(extra, digits):
    torch.manual_seed(0)
    net = build_supernet("vit", {**default_train_config("vit", quick=True).model, **extra}).eval()
    x = torch.from_numpy(digits.test[0][:16])
    rng = random.Random(2)
    with torch.inference_mode():
        for spec in [net.space.largest(), net.space.smallest(), net.space.sample(rng)]:
            assert (net(x, spec) - materialize(net, spec)(x)).abs().max().item() <= 1e-5


def test_vit_pool_is_validated():
    with pytest.raises(ConfigError, match="pool must be 'cls' or 'mean', got 'max'"):
        build_supernet("vit", {"pool": "max"})


def test_weight_slice_shares_storage():
    net = tiny("resnet")
    blk = net.blocks[0][0]
    assert blk.conv1[:4, :3].data_ptr() == blk.conv1.data_ptr()  # a view, no copy


def test_subnetnorm_statistics_differ_per_subnet_and_change_outputs(digits):
    net = tiny("resnet")
    big, small = net.space.largest(), net.space.smallest()
    net.calibrate([big, small], digits.train[0], n=400)
    mb, _ = net.norm_store.get(big)
    ms, _ = net.norm_store.get(small)
    # the stem is shared, so its statistics agree; later layers differ per subnet
    assert torch.allclose(mb[0], ms[0], atol=1e-2)
    assert not torch.allclose(mb[-1][: ms[-1].numel()], ms[-1], atol=1e-3)
    x = torch.from_numpy(digits.test[0][:64])
    with torch.inference_mode():
        with_norm = net(x, small)
        shared = net.forward_mode(x, small, NormMode.SHARED)
    assert not torch.allclose(with_norm, shared)


def test_calibration_matches_exact_statistics(digits):
    """A one-batch calibration equals the per-channel mean/var of the stem's output."""
    net = tiny("resnet")
    spec = net.space.smallest()
    x = torch.from_numpy(digits.train[0][:200])
    net.calibrate([spec], x, n=200, batch_size=200)
    mean, var = net.norm_store.get(spec)
    with torch.no_grad():
        h = torch.nn.functional.conv2d((x - 0.1307) / 0.3081, net.stem, None, 1, 1)
    assert torch.allclose(mean[0], h.mean((0, 2, 3)), atol=2e-3)
    assert torch.allclose(var[0], h.var((0, 2, 3), unbiased=False), rtol=2e-3, atol=2e-3)


def test_missing_statistics_is_a_clear_error():
    net = tiny("resnet")
    with pytest.raises(InvalidSpecError, match="calibrate"):
        net(torch.zeros(1, 1, 8, 8), net.space.largest())


def test_norm_store_is_compact_and_round_trips(tmp_path, digits):
    net = calibrated("resnet", [], digits)
    specs = [net.space.sample(random.Random(i)) for i in range(5)]
    net.calibrate(specs, digits.train[0], n=200)
    path = tmp_path / "s.pt"
    net.norm_store.save(path)
    store = NormStore.load(path)
    assert set(store.specs()) == set(net.norm_store.specs())
    for s in specs:
        a, b = store.get(s), net.norm_store.get(s)
        assert all(torch.equal(u, v) for u, v in zip(a[0], b[0]))
        channels = sum(out + 2 * mid + (out if blk == 0 else 0)
                       for _, blk, mid, out in net.layout(s)) + net.config.stem_channels
        assert store.nbytes(s) == 2 * 2 * channels  # fp16 mean + var per active channel


def test_norm_store_caches_unpacked_views_until_recalibrated(digits):
    net = tiny("resnet")
    spec = net.space.smallest()
    net.calibrate([spec], digits.train[0], n=100, seed=0)
    first = net.norm_store.get(spec)
    assert net.norm_store.get(spec) is first  # switching back costs a dict lookup
    assert net.norm_store.cache_nbytes() == 2 * net.norm_store.nbytes(spec)  # fp32 vs fp16
    net.calibrate([spec], digits.train[0], n=100, seed=1)  # other images: new statistics
    second = net.norm_store.get(spec)
    assert second is not first and not torch.equal(second[0][-1], first[0][-1])


@pytest.mark.parametrize("family", FAMILIES)
def test_two_threads_with_different_specs(family, digits):
    net = tiny(family)
    a, b = net.space.largest(), net.space.smallest()
    net.calibrate([a, b], digits.train[0], n=300)
    x = torch.from_numpy(digits.test[0][:16])
    with torch.inference_mode():
        ref = {a: net(x, a), b: net(x, b)}
    errors = []

    def worker(spec):
        with torch.inference_mode():
            for _ in range(30):
                if not torch.equal(net(x, spec), ref[spec]):
                    errors.append(spec)

    threads = [threading.Thread(target=worker, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("bad,msg", [
    ({"depths": [9, 1], "widths": [1.0, 1.0], "expands": [[0.5] * 9, [0.5]]}, r"depths\[0\]=9"),
    ({"depths": [1, 1], "widths": [0.3, 1.0], "expands": [[0.5], [0.5]]}, r"widths\[0\]=0.3"),
    ({"depths": [1, 1], "widths": [1.0, 1.0], "expands": [[0.9], [0.5]]}, r"expands\[0\]\[0\]=0.9"),
    ({"depths": [1], "widths": [1.0], "expands": [[0.5]]}, "stages"),
    ({"depths": [2, 1], "widths": [1.0, 1.0], "expands": [[0.5], [0.5]]}, r"expands\[0\] has 1"),
])
def test_invalid_resnet_specs_name_field_and_value(bad, msg):
    net = tiny("resnet")
    with pytest.raises(InvalidSpecError, match=msg):
        net.space.spec_from_dict({"family": "resnet", **bad})


@pytest.mark.parametrize("bad,msg", [
    ({"depth": 7, "heads": [1] * 7, "mlp": [32] * 7}, "depth=7"),
    ({"depth": 1, "heads": [3], "mlp": [32]}, r"heads\[0\]=3"),
    ({"depth": 1, "heads": [1], "mlp": [33]}, r"mlp\[0\]=33"),
    ({"depth": 2, "heads": [1], "mlp": [32, 32]}, "depth=2"),
])
def test_invalid_vit_specs_name_field_and_value(bad, msg):
    net = tiny("vit")
    with pytest.raises(InvalidSpecError, match=msg):
        net.space.spec_from_dict({"family": "vit", **bad})


def test_spec_dict_round_trip_and_hashable():
    r = ResNetSpec((1, 2), (0.5, 1.0), ((0.25,), (0.5, 0.75)))
    v = ViTSpec(2, (1, 2), (32, 64))
    assert spec_from_dict(r.to_dict()) == r and spec_from_dict(v.to_dict()) == v
    assert len({r, spec_from_dict(r.to_dict()), v}) == 2
    with pytest.raises(InvalidSpecError, match="family"):
        spec_from_dict({"family": "mlp"})


def test_dynabert_layer_rule():
    assert kept_layers(6, 6) == [0, 1, 2, 3, 4, 5]
    assert kept_layers(3, 6) == [0, 2, 4]
    assert kept_layers(2, 6) == [0, 3]
    assert kept_layers(4, 6) == [0, 1, 3, 4]


@pytest.mark.parametrize("family", FAMILIES)
def test_search_space_operations_stay_valid(family):
    net = tiny(family)
    sp, rng = net.space, random.Random(0)
    assert sp.size() > 1
    specs = {sp.sample(rng) for _ in range(200)}
    for s in list(specs)[:50]:
        sp.validate(sp.mutate(s, rng, 0.5))
        sp.validate(sp.crossover(s, sp.sample(rng), rng))
    assert net.flops(sp.smallest()) < net.flops(sp.largest())
    assert net.params(sp.largest()) == sum(
        p.numel() for n, p in materialize_ready(net).named_parameters())


def materialize_ready(net):
    if net.uses_norm_stats:
        net.calibrate([net.space.largest()], load_digits8().train[0], n=100)
    return materialize(net, net.space.largest())


def test_checkpoint_round_trip(tmp_path, digits):
    net = calibrated("resnet", [], digits)
    spec = net.space.largest()
    net.calibrate([spec], digits.train[0], n=200)
    path = tmp_path / "c.pt"
    save_checkpoint(path, net, {"family": "resnet"}, {"acc": 1.0})
    ckpt = load_checkpoint(path)
    assert ckpt["schema_version"] == 1 and ckpt["metrics"] == {"acc": 1.0}
    assert ckpt["provenance"]["torch_version"] == torch.__version__
    net2 = load_supernet(path)
    x = torch.from_numpy(digits.test[0][:8])
    with torch.inference_mode():
        assert torch.equal(net(x, spec), net2(x, spec))
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(CheckpointError):
        load_supernet(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_supernet(tmp_path / "missing.pt")
