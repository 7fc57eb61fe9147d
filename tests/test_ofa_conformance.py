"""OFA families against the reference implementation (PyPI `ofa`, random weights).

For >= 20 sampled subnets per family, smallest and largest included, our supernet(x, spec)
equals the reference's set_active_subnet + get_active_subnet output within 1e-4, in eval mode
with the same BatchNorm statistics (the reference's running statistics, stored as the spec's
SubnetNorm statistics), at 64 px; the largest and smallest once more at 224 px. Also: OFA's
published file layouts load, SubnetNorm statistics are per (subnet, resolution), and a
calibrated subnet normalises its calibration batch exactly.

`ofa` imports torchvision only for its data loaders; there is no usable CPU torchvision here,
so a stub module stands in for it (nothing of it is called).
"""

from __future__ import annotations

import random

import pytest
import torch

ofa = pytest.importorskip("ofa")

from superserve.errors import CheckpointError
from superserve.models.ofa_reference import reference_networks
from superserve.models.ofa_weights import IMAGENET_MEAN, IMAGENET_STD, load_ofa_state_dict
from superserve.subnetact.norm import NormContext, NormMode

TOL = 1e-4
N_SAMPLED = 20
SMALL = 64  # px: fast; the 224 px check runs the two ends once


def _reference_networks():
    mbv3, resnets = reference_networks()
    return resnets, mbv3


def _randomise(ref: torch.nn.Module, seed: int) -> None:
    """Random BN statistics and affine terms, perturbed kernel transforms, logits O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("_matrix"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.rand(m.num_features, generator=g) - 0.1)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + 0.5 * torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.rand(m.num_features, generator=g) - 0.1)
        lin = ref.classifier.linear
        getattr(lin, "linear", lin).weight.mul_(30.0)  # logits of a few units, not ~0.05


NORM = (torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))


def _ref_out(ref, kw: dict, x: torch.Tensor) -> torch.Tensor:
    ref.set_active_subnet(**kw)
    sub = ref.get_active_subnet(preserve_weight=True).eval()
    with torch.no_grad():
        return sub((x - NORM[0]) / NORM[1])


@pytest.fixture(scope="module")
def resnet_pair():
    from superserve.models.ofa_resnet import OFAResNet50, OFAResNetConfig

    torch.manual_seed(0)
    OFAResNets, _ = _reference_networks()
    ref = OFAResNets(n_classes=1000, depth_list=[0, 1, 2], expand_ratio_list=[0.2, 0.25, 0.35],
                     width_mult_list=[0.65, 0.8, 1.0])
    _randomise(ref, 1)
    ref.eval()
    net = OFAResNet50(OFAResNetConfig(resolutions=(SMALL, 96, 224))).eval()
    load_ofa_state_dict(net, ref.state_dict())
    return ref, net


@pytest.fixture(scope="module")
def mbv3_pair():
    from superserve.models.ofa_mbv3 import OFAMBv3Config, OFAMobileNetV3

    torch.manual_seed(0)
    _, RefMBv3 = _reference_networks()
    ref = RefMBv3(n_classes=1000, width_mult=1.2, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6],
                  depth_list=[2, 3, 4])
    _randomise(ref, 2)
    ref.eval()
    net = OFAMobileNetV3(OFAMBv3Config(resolutions=(SMALL, 96, 224))).eval()
    load_ofa_state_dict(net, ref.state_dict())
    return ref, net


def _kw(spec) -> dict:
    d = spec.to_dict()
    d.pop("family"), d.pop("r")
    return d


def _specs(net, r: int, n: int, seed: int) -> list:
    rng = random.Random(seed)
    specs = [net.space.smallest(), net.space.largest()]
    while len(specs) < n + 2:
        s = net.space.sample(rng)
        if s not in specs:
            specs.append(s)
    return [type(s)(**{**_kw(s), "r": r}) for s in specs]


def _max_diff(ref, net, specs, batch: int = 2, seed: int = 0) -> float:
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for spec in specs:
        net.space.validate(spec)
        x = torch.rand(batch, 3, spec.r, spec.r, generator=g)
        net.store_shared_stats([spec])  # the reference's statistics as this subnet's SubnetNorm
        with torch.inference_mode():
            ours = net(x, spec)
        theirs = _ref_out(ref, _kw(spec), x)
        assert ours.shape == theirs.shape == (batch, 1000)
        assert theirs.abs().max() > 0.5  # a meaningful comparison, not two near-zero outputs
        diff = float((ours - theirs).abs().max())
        assert diff <= TOL, (spec.to_dict(), diff)
        worst = max(worst, diff)
    return worst


def test_ofa_resnet50_matches_reference_on_sampled_subnets(resnet_pair):
    ref, net = resnet_pair
    specs = _specs(net, SMALL, N_SAMPLED, seed=0)
    assert len(specs) >= 22 and net.space.smallest().d == specs[0].d
    worst = _max_diff(ref, net, specs)
    print(f"ofa_resnet50: max abs diff {worst:.3g} over {len(specs)} subnets at {SMALL}px")


def test_ofa_mbv3_matches_reference_on_sampled_subnets(mbv3_pair):
    ref, net = mbv3_pair
    specs = _specs(net, SMALL, N_SAMPLED, seed=0)
    worst = _max_diff(ref, net, specs)
    print(f"ofa_mbv3: max abs diff {worst:.3g} over {len(specs)} subnets at {SMALL}px")


@pytest.mark.parametrize("family", ["resnet", "mbv3"])
def test_ofa_matches_reference_at_224px(family, resnet_pair, mbv3_pair):
    ref, net = resnet_pair if family == "resnet" else mbv3_pair
    ends = [net.space.smallest(), net.space.largest()]
    _max_diff(ref, net, [type(s)(**{**_kw(s), "r": 224}) for s in ends], batch=1)


def test_ofa_resolution_is_part_of_the_spec(mbv3_pair):
    """SubnetNorm statistics per (subnet, resolution); a batch at another size is resized to
    the spec's r (the batch is preprocessed before its subnet is chosen)."""
    import torch.nn.functional as F

    ref, net = mbv3_pair
    base = net.space.smallest()
    a, b = (type(base)(**{**_kw(base), "r": r}) for r in (SMALL, 96))
    assert a != b and len({a, b}) == 2
    x = torch.rand(2, 3, 96, 96)
    net.calibrate([a, b], x, n=2)
    assert net.norm_store.has(a) and net.norm_store.has(b)
    assert not torch.equal(net.norm_store.get(a)[0][0], net.norm_store.get(b)[0][0])
    net.store_shared_stats([a])
    small = F.interpolate(x, size=(SMALL, SMALL), mode="bilinear", align_corners=False,
                          antialias=True)
    with torch.inference_mode():
        assert torch.allclose(net(x, a), net(small, a), atol=1e-5)
    with torch.inference_mode():
        ours = net(small, a)
    assert float((ours - _ref_out(ref, _kw(a), small)).abs().max()) <= TOL


@pytest.mark.parametrize("family", ["resnet", "mbv3"])
def test_ofa_calibrated_statistics_normalise_the_calibration_batch(family, resnet_pair, mbv3_pair):
    """SubnetNorm calibration on one batch, then eval on that batch == batch-statistics mode."""
    _, net = resnet_pair if family == "resnet" else mbv3_pair
    spec = net.space.sample(random.Random(7))
    spec = type(spec)(**{**_kw(spec), "r": SMALL})
    x = torch.rand(4, 3, SMALL, SMALL)
    net.calibrate([spec], x, n=4)
    with torch.inference_mode():
        got = net(x, spec)
        want = net.forward_ctx(x, spec, NormContext(NormMode.BATCH))
    assert torch.allclose(got, want, atol=1e-3, rtol=1e-3)


def test_ofa_published_checkpoint_layouts_load(tmp_path, mbv3_pair):
    """{'state_dict': ...} with OFA's older key names, and a bare state dict, both load via
    load_supernet(family, weights=FILE); a file for another config fails with the key named."""
    from superserve.models import load_supernet

    ref, net = mbv3_pair
    old = {}  # the static-layer names of older OFA files: .mobile_inverted_conv., .bn., .conv.weight
    for k, v in ref.state_dict().items():
        k = k.replace(".conv.", ".mobile_inverted_conv.", 1) if k.startswith("blocks.") else k
        old["module." + k.replace(".bn.bn.", ".bn.").replace(".conv.conv.weight", ".conv.weight")] = v
    wrapped, bare = tmp_path / "wrapped.pth", tmp_path / "bare.pth"
    torch.save({"state_dict": old}, wrapped)
    torch.save(ref.state_dict(), bare)
    spec = net.space.sample(random.Random(3))
    spec = type(spec)(**{**_kw(spec), "r": SMALL})
    x = torch.rand(1, 3, SMALL, SMALL)
    for path in (wrapped, bare):
        loaded = load_supernet("ofa_mbv3", weights=path,
                               model_config={"resolutions": [SMALL, 96, 224]})
        assert loaded.norm_store.has(loaded.space.largest())
        loaded.store_shared_stats([spec])
        with torch.inference_mode():
            assert float((loaded(x, spec) - _ref_out(ref, _kw(spec), x)).abs().max()) <= TOL
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        load_supernet("ofa_resnet50", weights=bare)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError):
        load_supernet("ofa_mbv3", weights=bad)


@pytest.mark.parametrize("family", ["resnet", "mbv3"])
def test_ofa_flops_and_params_match_the_reference_counts(family, resnet_pair, mbv3_pair):
    """flops/params by formula (the search calls them thousands of times) equal the reference's
    count of the extracted subnet: parameters exactly, multiply-accumulates (ofa's
    count_net_flops; our flops are 2 x MACs) to float rounding."""
    from ofa.utils import count_net_flops

    ref, net = resnet_pair if family == "resnet" else mbv3_pair
    rng = random.Random(5)
    for spec in (net.space.largest(), net.space.smallest(), net.space.sample(rng)):
        ref.set_active_subnet(**_kw(spec))
        sub = ref.get_active_subnet(preserve_weight=False)
        assert net.params(spec) == sum(p.numel() for p in sub.parameters())
        macs = count_net_flops(sub, (1, 3, spec.r, spec.r))
        assert net.flops(spec) / 2 == pytest.approx(macs, rel=1e-6)


@pytest.mark.parametrize("family", ["resnet", "mbv3"])
def test_ofa_materialize_equals_supernet_and_reference(family, resnet_pair, mbv3_pair):
    """materialize(net, spec): the supernet trimmed to the weight prefixes the spec reads; same
    outputs; ResNet50 keeps exactly the extracted subnet's parameters (MobileNetV3 also keeps
    the 7x7 kernels and transforms its smaller kernels derive from)."""
    from superserve.subnetact import materialize

    ref, net = resnet_pair if family == "resnet" else mbv3_pair
    spec = net.space.sample(random.Random(11))
    spec = type(spec)(**{**_kw(spec), "r": SMALL})
    net.store_shared_stats([spec])
    m = materialize(net, spec)
    x = torch.rand(2, 3, SMALL, SMALL)
    with torch.inference_mode():
        out = m(x)
        assert torch.equal(out, net(x, spec))
    n = sum(p.numel() for p in m.parameters())
    assert n == net.params(spec) if family == "resnet" else net.params(spec) <= n < 1.2 * net.params(spec)
    assert float((out - _ref_out(ref, _kw(spec), x)).abs().max()) <= TOL


@pytest.mark.parametrize("family", ["resnet", "mbv3"])
def test_ofa_space_validates_fields_and_crosses_over_within_the_parents(family, resnet_pair,
                                                                         mbv3_pair):
    import dataclasses

    from superserve.errors import InvalidSpecError

    _, net = resnet_pair if family == "resnet" else mbv3_pair
    space = net.space
    a, b = space.smallest(), space.largest()
    rng = random.Random(5)
    for _ in range(20):
        child = space.crossover(a, b, rng)
        assert type(child) is type(a) and space.validate(child) is child
        for f in dataclasses.fields(child):
            v, x, y = getattr(child, f.name), getattr(a, f.name), getattr(b, f.name)
            if isinstance(v, tuple):
                assert all(u in (p, q) for u, p, q in zip(v, x, y))
            elif f.name == "r":
                assert v in (x, y)
    with pytest.raises(InvalidSpecError, match="d must be 5 values"):
        space.validate(dataclasses.replace(a, d=a.d[:4]))
    with pytest.raises(InvalidSpecError, match="r=1 is not one of"):
        space.validate(dataclasses.replace(a, r=1))
    if family == "resnet":
        with pytest.raises(InvalidSpecError, match="w must be 6 indices"):
            space.validate(dataclasses.replace(a, w=(9,) * 6))
    else:
        with pytest.raises(InvalidSpecError, match="ks must be"):
            space.validate(dataclasses.replace(a, ks=(4,) * len(a.ks)))
