"""The public model contract: the worked example of docs/models.md, run as written, plugged in
by `pkg.module:factory` and by an entry point; the shipped families meet the same contract."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest
import torch

from superserve.errors import ConfigError, InvalidSpecError
from superserve.models import (
    InputSpec,
    Supernet,
    build_supernet,
    family_names,
    get_family,
    load_checkpoint,
    load_supernet,
    registry,
    save_checkpoint,
)
from superserve.subnetact import NormStore, spec_from_dict
from superserve.subnetact import spec as spec_mod

DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _example_source() -> str:
    text = DOCS.read_text()
    m = re.search(r"<!-- example: my_family\.py -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert m, "docs/models.md lost its worked example"
    return m.group(1)


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The docs' example as an importable module `my_family` (registry restored afterwards)."""
    (tmp_path / "my_family.py").write_text(_example_source())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    monkeypatch.setattr(spec_mod, "_PARSERS", dict(spec_mod._PARSERS))
    yield tmp_path
    sys.modules.pop("my_family", None)


def test_docs_example_plugs_in_by_module_reference(plugin, tmp_path):
    info = get_family("my_family:FAMILY")
    assert info.name == "tiny_cnn" and "tiny_cnn" in family_names()
    net = build_supernet("my_family:FAMILY")
    assert isinstance(net, Supernet) and net.family == "tiny_cnn"
    assert isinstance(net.input_spec, InputSpec) and net.input_spec.shape == (1, 8, 8)
    x = torch.rand(16, 1, 8, 8)
    specs = [net.space.largest(), net.space.smallest()]
    net.calibrate(specs, x, n=16)
    net.eval()
    with torch.inference_mode():
        outs = [net(x[:3], s) for s in specs]
    assert all(o.shape == (3, 10) for o in outs) and not torch.allclose(outs[0], outs[1])
    # the spec type was registered: JSON round trip through the generic parser
    s = net.space.sample(random.Random(0))
    assert spec_from_dict(s.to_dict()) == s
    # checkpoint round trip: the factory reference travels, statistics included
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, net, {}, {})
    assert load_checkpoint(path)["factory"] == "my_family:FAMILY"
    again = load_supernet(path)
    assert again.family == "tiny_cnn" and len(again.norm_store) == 2
    with torch.inference_mode():
        assert torch.allclose(again(x[:3], specs[1]), outs[1], atol=1e-3)
    # materialize with no code of the family's own: the supernet trimmed to what the spec reads
    from superserve.subnetact import materialize

    m = materialize(net, specs[1])
    with torch.inference_mode():
        assert torch.equal(m(x[:3]), outs[1])
    assert sum(p.numel() for p in m.parameters()) == net.params(specs[1])


def test_docs_example_plugs_in_by_entry_point(plugin):
    dist = plugin / "my_family_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-family-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[superserve.models]\ntiny_cnn = my_family:FAMILY\n")
    registry.refresh_entry_points()
    assert "tiny_cnn" in family_names()
    assert "my_family" not in sys.modules  # loaded lazily, on first use
    # a table or SubnetNorm file of the plugin's family parses before anything built it
    assert spec_from_dict({"family": "tiny_cnn", "depth": 2, "width": 0.5}).short() == "d2-w0.5"
    net = build_supernet("tiny_cnn", {"channels": 8})
    assert net.config.channels == 8 and get_family("tiny_cnn").origin.startswith("entry point")


def test_factory_function_returning_a_supernet(plugin):
    (plugin / "my_factory.py").write_text(
        "from my_family import TinyCNN, TinyConfig\n"
        "def make(**cfg):\n    return TinyCNN(TinyConfig(**cfg))\n")
    net = build_supernet("my_factory:make", {"channels": 4})
    assert net.family == "tiny_cnn" and net.config.channels == 4
    sys.modules.pop("my_factory", None)


def test_unknown_family_and_bad_reference_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model family"):
        get_family("no_such_family")
    with pytest.raises(ConfigError, match="cannot import"):
        get_family("no_such_module_xyz:FAMILY")
    with pytest.raises(InvalidSpecError, match="family"):
        spec_from_dict({"family": "no_such_family"})


@pytest.mark.parametrize("family", ["resnet", "vit", "ofa_mbv3", "ofa_resnet50"])
def test_shipped_families_meet_the_contract(family):
    net = build_supernet(family)
    assert isinstance(net, Supernet) and net.family == family
    spec_in = net.input_spec
    assert isinstance(spec_in, InputSpec) and len(spec_in.mean) == spec_in.channels
    assert InputSpec.from_dict(json.loads(json.dumps(spec_in.to_dict()))) == spec_in
    space = net.space
    rng = random.Random(0)
    for s in (space.largest(), space.smallest(), space.sample(rng),
              space.mutate(space.largest(), rng, 0.5),
              space.crossover(space.largest(), space.smallest(), rng)):
        assert space.validate(s) is s
        assert spec_from_dict(s.to_dict()) == s and hash(s) == hash(spec_from_dict(s.to_dict()))
        assert space.spec_from_dict(s.to_dict()) == s
    big, small = space.largest(), space.smallest()
    assert net.flops(big) > net.flops(small) > 0 and net.params(big) > net.params(small) > 0
    assert net.num_layers(big) > net.num_layers(small) > 0
    assert space.size() > 1


def test_norm_store_dtype_round_trips():
    store = NormStore(torch.float32)
    spec = spec_from_dict({"family": "vit", "depth": 1, "heads": [1], "mlp": [8]})
    store.put(spec, [torch.tensor([1.0 + 1e-6])], [torch.tensor([2.0])])
    back = NormStore.from_state(store.state())
    assert back.dtype == torch.float32 and back.get(spec)[0][0].item() == pytest.approx(1.0 + 1e-6)
    assert NormStore().dtype == torch.float16  # the MNIST families' compact default


def test_models_json_lists_every_registered_family(capsys):
    from superserve.cli import main

    assert main(["models", "--json", "--no-latency"]) == 0
    models = {m["family"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert {"resnet", "vit", "ofa_resnet50", "ofa_mbv3"} <= set(models)
    for fam in ("ofa_resnet50", "ofa_mbv3"):
        m = models[fam]
        assert m["weights_required"] and m["checkpoint"] is None
        assert m["input"]["channels"] == 3 and m["input"]["height"] == 224
        assert m["input"]["resolutions"] == [128, 160, 192, 224]
        assert m["search_space_size"] > 10**12 and m["spec_example"]["family"] == fam
    assert set(models["ofa_mbv3"]["spec_example"]) == {"family", "ks", "e", "d", "r"}
    assert set(models["ofa_resnet50"]["spec_example"]) == {"family", "d", "e", "w", "r"}
    assert models["resnet"]["input"]["channels"] == 1 and not models["resnet"]["weights_required"]


def test_cli_profiles_a_user_family_on_an_image_folder(plugin, tmp_path, capsys):
    """`superserve profile --model my_family:FAMILY --data DIR --out T.json`: the docs' family,
    a synthetic 3-class folder (accuracy means nothing), a table and its statistics."""
    import numpy as np
    from PIL import Image

    from superserve.cli import main
    from superserve.profiling import ProfileTable, norm_path

    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray((rng.random((12, 10)) * 60 + 80 * c).astype(np.uint8)).save(
                tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    assert main(["profile", "--model", "my_family:FAMILY", "--data", str(tmp_path / "imgs")]) != 0
    assert "--out" in capsys.readouterr().err
    out, ckpt = tmp_path / "T.json", tmp_path / "tiny.pt"
    save_checkpoint(ckpt, build_supernet("my_family:FAMILY"), {}, {})  # the user's weights
    assert main(["profile", "--model", "my_family:FAMILY", "--data", str(tmp_path / "imgs"),
                 "--weights", str(ckpt), "--out", str(out), "--generations", "1", "--max-subnets", "3", "--repeats", "2",
                 "--batch-sizes", "1", "2", "--calib-images", "8", "--json"]) == 0
    table = ProfileTable.load(out)
    assert table.family == "tiny_cnn" and table.provenance["data"] == "folder:imgs"
    assert {s.spec["family"] for s in table.subnets} == {"tiny_cnn"}
    assert len(NormStore.load(norm_path(out))) == len(table)


def test_interrupted_profile_resumes_from_its_journal(plugin, tmp_path):
    """An interrupt during the search leaves a journal beside --out; the rerun reuses its
    scores (no recomputation) and removes it once the table is written."""
    import numpy as np

    from superserve.profiling.journal import journal_path
    from superserve.profiling.profiler import ProfileConfig, run_profile
    from superserve.profiling.search import SearchConfig

    rng = np.random.default_rng(1)
    x = rng.random((30, 1, 8, 8)).astype(np.float32)
    y = np.arange(30) % 3
    from superserve.data import Splits

    data = Splits((x[:12], y[:12]), (x[12:24], y[12:24]), (x[24:], y[24:]), name="synthetic")
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, build_supernet("my_family:FAMILY"), {}, {})
    small = SearchConfig(population=10, generations=1, children=6)
    cfg = ProfileConfig(batch_sizes=(1, 2), repeats=2, warmup=1, search_calib_images=8,
                        calib_images=8, max_subnets=3, predictor_samples=3, search=small,
                        predictor_search=small, eval_threads=1)
    kw = {"weights": ckpt, "data": data}

    class Stop(Exception):
        pass

    def interrupt(stage: str, i: int, n: int) -> None:
        if stage == "search" and i >= 6:
            raise Stop

    out = tmp_path / "T.json"
    with pytest.raises(Stop):
        run_profile("my_family:FAMILY", out, cfg, interrupt, **kw)
    assert journal_path(out).is_file() and not out.exists()
    estimates = []
    resumed = run_profile("my_family:FAMILY", out, cfg, on_estimate=estimates.append, **kw)
    assert resumed.provenance["resumed_candidates"] >= 6 and not journal_path(out).exists()
    assert estimates and estimates[0]["total_s"] > 0
    assert resumed.provenance["estimate_seconds"]["total_s"] > 0
    # (the tables of two runs may differ: the search's latency model is measured, not seeded)
