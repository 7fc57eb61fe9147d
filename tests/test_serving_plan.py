"""The serving plan (SupernetMixin.serving_plan): without autograd, `supernet(x, spec)` runs a
flat function over views of the shared weights and of the spec's SubnetNorm statistics. It
must give the module path's logits bit for bit, keep the weights shared, and never outlive
what it captured: new statistics for the spec, a move to another device or dtype, replaced
parameters. With autograd on, or for a subclass with its own forward, the module path runs."""

import copy
import io
import random

import pytest
import torch

from superserve.data import load_digits8
from superserve.models import build_supernet
from superserve.models.configs import default_train_config
from superserve.models.resnet import ResNetSupernet
from superserve.subnetact.norm import NormContext, NormMode


@pytest.fixture(scope="module")
def digits():
    return load_digits8()


def _net(digits, n_specs=8):
    torch.manual_seed(0)
    net = build_supernet("resnet", default_train_config("resnet", quick=True).model)
    with torch.no_grad():  # non-trivial BN affines, so the statistics matter
        for name, p in net.named_parameters():
            if name.endswith(("weight", "bias")) and p.dim() == 1:
                p.uniform_(0.5, 1.5)
    rng = random.Random(3)
    specs = [net.space.largest(), net.space.smallest()]
    specs += [net.space.sample(rng) for _ in range(n_specs - 2)]
    net.eval().calibrate(specs, digits.train[0], n=200)
    return net, specs


def _module(net, x, spec):
    return net.forward_ctx(x, spec, NormContext(NormMode.EVAL, net.norm_store.get(spec)))


def test_plan_gives_the_module_paths_logits_bit_for_bit(digits):
    net, specs = _net(digits)
    x = torch.from_numpy(digits.test[0][:5])
    with torch.inference_mode():
        for spec in specs:
            for b in (1, 5):
                assert torch.equal(net(x[:b], spec), _module(net, x[:b], spec)), spec
    assert set(net._plans) == set(specs)
    with torch.no_grad():  # no_grad counts as serving too
        assert torch.equal(net(x, specs[2]), _module(net, x, specs[2]))
    # the weights stay shared: the plan's views point into the supernet's own storage
    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                yield from tensors(o)

    plan = net._plans[specs[0]][1]
    captured = [t for c in plan.__closure__ for t in tensors(c.cell_contents)]
    weights = [t for t in captured if t.dim() == 4]  # conv weights: stem, blocks
    storages = {p.untyped_storage().data_ptr() for p in net.parameters()}
    assert len(weights) >= 1 + 3 * sum(specs[0].depths)
    assert all(w.untyped_storage().data_ptr() in storages for w in weights)
    assert not any(t.requires_grad for t in captured)


def test_plan_follows_new_statistics_dtype_and_replaced_weights(digits):
    net, specs = _net(digits, 3)
    x = torch.from_numpy(digits.test[0][:4])
    spec = specs[2]
    with torch.inference_mode():
        before = net(x, spec)
    # new SubnetNorm statistics for the spec (a recalibration): a new plan, new logits
    net.calibrate([spec], digits.train[0][200:], n=100, seed=7)
    with torch.inference_mode():
        after = net(x, spec)
        assert torch.equal(after, _module(net, x, spec))
    assert not torch.equal(before, after)
    # a move to float64 (nn.Module._apply): the plans are dropped and rebuilt
    net.double()
    assert net._plans == {}
    with torch.inference_mode():
        y = net(x.double(), spec)
        assert y.dtype == torch.float64 and torch.equal(y, _module(net, x.double(), spec))
    net.float()
    # parameters replaced by load_state_dict(assign=True): nothing of the old ones is used
    state = {k: (v * 2 if k == "head_b" else v).clone() for k, v in net.state_dict().items()}
    with torch.inference_mode():
        net(x, spec)
    net.load_state_dict(state, assign=True)
    with torch.inference_mode():
        assert torch.equal(net(x, spec), _module(net, x, spec))


def test_autograd_and_subclasses_take_the_module_path(digits):
    net, specs = _net(digits, 2)
    x = torch.from_numpy(digits.test[0][:2]).requires_grad_(True)
    out = net(x, specs[0])  # eval mode, grad on: gradients reach the input and the weights
    out.sum().backward()
    assert x.grad is not None and net.head_w.grad is not None
    assert net._plans == {}

    class Scaled(ResNetSupernet):
        def forward_ctx(self, x, spec, ctx):
            return 2 * super().forward_ctx(x, spec, ctx)

    sub = Scaled(net.config)
    sub.load_state_dict(net.state_dict())
    sub.norm_store = net.norm_store
    sub.eval()
    with torch.inference_mode():
        xs = x.detach()
        assert torch.equal(sub(xs, specs[0]), 2 * _module(net, xs, specs[0]))
    assert sub._plans[specs[0]][1] is None


def test_copies_start_without_plans(digits):
    """A deep copy (materialize's trim_to_spec makes one) or a pickled module must not keep
    plans over the original's weights: the copy's forward reads its own."""
    net, specs = _net(digits, 2)
    x = torch.from_numpy(digits.test[0][:3])
    with torch.inference_mode():
        net(x, specs[0])
    assert net._plans
    twin = copy.deepcopy(net)
    assert twin._plans == {} and net._plans
    with torch.no_grad():
        twin.head_b.add_(1.0)  # in place: a plan over the original's head would miss it
    with torch.inference_mode():
        assert torch.equal(twin(x, specs[0]), _module(twin, x, specs[0]))
        assert not torch.equal(twin(x, specs[0]), net(x, specs[0]))
    buf = io.BytesIO()
    torch.save(net, buf)  # the whole module, closures and all, would not pickle
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    with torch.inference_mode():
        assert torch.equal(back(x, specs[0]), net(x, specs[0]))


def test_serving_plan_benchmark_checks_the_shipped_subnets(capsys):
    """benchmarks/serving_plan.py: the shipped resnet and vit have plans and every one of
    their subnets gives the module path's logits bit for bit (its exit status says so)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "serving_plan.py"
    spec = importlib.util.spec_from_file_location("serving_plan", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.run(bench.parse_args(["--calls", "2", "--warmup", "0"]))
    assert out["has_plan"] and out["not_bit_identical"] == [] and out["subnets"] == 37
    assert len(out["cells"]) == 9 and out["serving_pattern"]["calls"] == 4
    vit = bench.run(bench.parse_args(["--model", "vit", "--calls", "1", "--warmup", "0"]))
    assert vit["has_plan"] and vit["not_bit_identical"] == [] and vit["subnets"] == 40


@pytest.mark.parametrize("config", [{}, {"stem_channels": 8, "pool": "mean"}],
                         ids=["vit", "hybrid-mean-pool"])
def test_vit_plan_gives_the_module_paths_logits_and_shares_the_weights(config):
    """The vit family (no SubnetNorm: its plans are keyed by the spec alone) runs the same
    flat plan: bit for bit, over views of the shared weights, dropped with a dtype move, and
    not used under autograd."""
    from superserve.models.vit import ViTConfig, ViTSupernet

    torch.manual_seed(0)
    net = ViTSupernet(ViTConfig(**config)).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines and biases
        for name, p in net.named_parameters():
            if p.dim() == 1:
                p.uniform_(-0.5, 1.5)
    rng = random.Random(5)
    specs = [net.space.largest(), net.space.smallest()] + [net.space.sample(rng)
                                                           for _ in range(6)]
    x = torch.rand(5, 1, 28, 28)

    def module(x, spec):
        return net.forward_ctx(x, spec, NormContext(NormMode.EVAL))

    with torch.inference_mode():
        for spec in specs:
            for b in (1, 5):
                assert torch.equal(net(x[:b], spec), module(x[:b], spec)), spec
    assert set(net._plans) == set(specs) and all(p is not None for _, p in net._plans.values())
    storages = {p.untyped_storage().data_ptr() for p in net.parameters()}
    plan = net._plans[specs[0]][1]
    cells = [c.cell_contents for c in plan.__closure__]
    layers = next(c for c in cells if isinstance(c, list))
    assert len(layers) == specs[0].depth
    mats = [t for layer in layers for t in layer if isinstance(t, torch.Tensor) and t.dim() == 2]
    assert len(mats) == 4 * specs[0].depth  # qkv, proj, fc1, fc2 of every kept layer
    assert all(t.untyped_storage().data_ptr() in storages and not t.requires_grad for t in mats)
    net.double()
    assert net._plans == {}
    with torch.inference_mode():
        assert torch.equal(net(x.double(), specs[2]), module(x.double(), specs[2]))
    net.float()
    xg = x[:2].clone().requires_grad_(True)  # autograd: the module path, gradients flow
    net(xg, specs[0]).sum().backward()
    assert xg.grad is not None and net.head_w.grad is not None and net._plans == {}


def test_plan_reads_the_cudnn_switch_at_each_call(digits, monkeypatch):
    """F.batch_norm passes torch.backends.cudnn.enabled as it stands when it runs; so does
    the plan (it once took the value at build time, and a later switch did not reach it)."""
    net, specs = _net(digits, 2)
    x = torch.from_numpy(digits.test[0][:2])
    seen = []
    real = torch.batch_norm

    def spy(*args):
        seen.append(args[-1])
        return real(*args)

    monkeypatch.setattr(torch, "batch_norm", spy)  # before the plan is built: it binds it
    net._plans.clear()
    monkeypatch.setattr(torch.backends.cudnn, "enabled", True)
    with torch.inference_mode():
        net(x, specs[0])
        assert seen and all(seen)
        seen.clear()
        monkeypatch.setattr(torch.backends.cudnn, "enabled", False)
        net(x, specs[0])  # the same plan, built above
    assert seen and not any(seen)
    assert len(net._plans) == 1
