"""`superserve profile` for an OFA family on a user's labelled image folder (class sub-folders):
a tiny synthetic folder and a tiny supernet config, so accuracy means nothing here; what is
checked is the pipeline: decode + split, SubnetNorm per served subnet, a table with provenance
whose specs speak OFA's terms and that a fresh process can read."""

from __future__ import annotations

import json

import numpy as np
import torch

from superserve.models import build_supernet
from superserve.subnetact import NormStore

TINY = {"resolutions": [32, 40], "image_size": 40, "num_classes": 3}


def _folder(root, classes=3, per_class=6, size=(52, 44)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            a = (rng.random((size[1], size[0], 3)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(a).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_decodes_crops_and_splits_by_class(tmp_path):
    from superserve.models.imagefolder import load_image_folder

    net = build_supernet("ofa_mbv3", TINY)
    data = load_image_folder(_folder(tmp_path / "imgs"), net.input_spec, seed=0)
    xs = [data.train[0], data.val[0], data.test[0]]
    assert all(x.shape[1:] == (3, 40, 40) and x.dtype == np.float32 for x in xs)
    assert sum(len(x) for x in xs) == 18 and all(0 <= x.min() and x.max() <= 1 for x in xs)
    for y in (data.train[1], data.val[1], data.test[1]):
        assert sorted(set(y.tolist())) == [0, 1, 2]  # stratified: every class in every split


def test_ofa_flat_folder_with_an_image_labels_file(tmp_path):
    """The ImageNet validation layout: one flat folder and a file of '<image> <class>' lines,
    the class an output index (val.txt) or a class name (of --labels)."""
    import pytest

    from superserve.errors import ConfigError
    from superserve.models.imagefolder import list_labelled_images, load_image_folder

    nested = _folder(tmp_path / "nested")
    flat = tmp_path / "val"
    flat.mkdir()
    rows = []
    for c in range(3):
        for f in sorted((nested / f"class_{c}").iterdir()):
            name = f"ILSVRC2012_val_{len(rows):08d}{f.suffix}"
            f.rename(flat / name)
            rows.append((name, c))
    (tmp_path / "val.txt").write_text("".join(f"{n} {c}\n" for n, c in rows))
    spec = build_supernet("ofa_mbv3", TINY).input_spec
    data = load_image_folder(flat, spec, seed=0, image_labels=tmp_path / "val.txt")
    assert sum(len(s[0]) for s in (data.train, data.val, data.test)) == 18
    for y in (data.train[1], data.val[1], data.test[1]):
        assert sorted(set(y.tolist())) == [0, 1, 2]
    (tmp_path / "names.txt").write_text("tench\ngoldfish\nshark\n")
    (tmp_path / "by_name.csv").write_text(
        "".join(f"{n},{('tench', 'goldfish', 'shark')[c]}\n" for n, c in rows))
    _, y, names = list_labelled_images(flat, tmp_path / "by_name.csv",
                                       ["tench", "goldfish", "shark"])
    assert names == ["tench", "goldfish", "shark"] and y.tolist() == [c for _, c in rows]
    (tmp_path / "bad.txt").write_text(f"{rows[0][0]} whale\n")
    with pytest.raises(ConfigError, match="class 'whale'"):
        list_labelled_images(flat, tmp_path / "bad.txt", ["tench", "goldfish", "shark"])
    (tmp_path / "missing.txt").write_text("nope.jpg 0\n")
    with pytest.raises(ConfigError, match="not a file"):
        list_labelled_images(flat, tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="--image-labels"):
        load_image_folder(flat, spec)  # flat, and no file to say the classes


def test_ofa_profile_on_an_image_folder(tmp_path):
    from superserve.models.imagefolder import load_image_folder
    from superserve.profiling import ProfileTable, norm_path
    from superserve.profiling.profiler import ProfileConfig, run_profile
    from superserve.profiling.search import SearchConfig

    torch.manual_seed(0)
    weights = tmp_path / "ofa_mbv3.pth"  # our state dict is OFA's canonical layout
    torch.save({"state_dict": build_supernet("ofa_mbv3", TINY).state_dict()}, weights)
    data = load_image_folder(_folder(tmp_path / "imgs"),
                             build_supernet("ofa_mbv3", TINY).input_spec)
    small = SearchConfig(population=6, generations=1, children=4)
    cfg = ProfileConfig(batch_sizes=(1, 2), repeats=2, warmup=1, search_calib_images=6,
                        calib_images=6, max_subnets=3, predictor_samples=4, search=small,
                        predictor_search=small, eval_threads=1)
    out = tmp_path / "T.json"
    stages = set()
    table = run_profile("ofa_mbv3", out, cfg, lambda s, i, n: stages.add(s), weights=weights,
                        data=data, model_config=TINY)
    assert table.provenance["estimate_seconds"]["total_s"] > 0
    assert {"latency model", "search", "calibrate + score", "profile rounds"} <= stages
    again = ProfileTable.load(out)
    assert again.family == "ofa_mbv3" and len(again) >= 1
    spec = again.subnets[0].spec
    assert set(spec) == {"family", "ks", "e", "d", "r"} and spec["r"] in TINY["resolutions"]
    assert again.provenance["data"].startswith("folder:")
    store = NormStore.load(norm_path(out))
    assert store.dtype == torch.float32 and len(store) == len(again)
    assert json.loads(out.read_text())["family"] == "ofa_mbv3"
