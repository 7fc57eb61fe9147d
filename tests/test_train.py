"""`superserve train --quick` trains a real (small) supernet end to end, and the data split."""

import json

import numpy as np
import pytest

from superserve.cli import main
from superserve.data import load_digits8, load_mnist
from superserve.errors import ConfigError
from superserve.models import load_checkpoint, load_supernet
from superserve.models.configs import TrainConfig, default_train_config


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_quick_train_learns_and_checkpoint_loads(family, tmp_path, capsys):
    out = tmp_path / f"{family}.pt"
    assert main(["train", "--family", family, "--quick", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    # 10 classes: chance is 0.1; the quick config must clearly learn
    assert printed["test_accuracy_largest"] > 0.6
    ckpt = load_checkpoint(out)
    assert ckpt["train_config"]["family"] == family and ckpt["train_config"]["dataset"] == "digits8"
    assert ckpt["model_config"]["image_size"] == 8 and ckpt["schema_version"] == 1
    assert ckpt["provenance"]["git_commit"] and ckpt["provenance"]["torch_version"]
    net = load_supernet(out)
    assert net.family == family
    if net.uses_norm_stats:
        assert net.norm_store.has(net.space.largest()) and net.norm_store.has(net.space.smallest())
        assert "test_accuracy_smallest_shared_bn" in printed  # without SubnetNorm, for contrast
    assert json.loads(out.with_suffix(".metrics.json").read_text()) == ckpt["metrics"]


def test_mnist_split_is_stratified_disjoint_and_seeded():
    d = load_mnist()
    assert [len(d.train[1]), len(d.val[1]), len(d.test[1])] == [3500, 500, 1000]
    for _, y in (d.train, d.val, d.test):
        counts = np.bincount(y, minlength=10)
        assert counts.min() == counts.max()  # exactly stratified
    assert d.train[0].dtype == np.float32 and d.train[0].shape[1:] == (1, 28, 28)
    assert 0.0 <= d.train[0].min() and d.train[0].max() <= 1.0
    rows = lambda x: {r.tobytes() for r in x.reshape(len(x), -1)}
    assert not rows(d.test[0]) & rows(d.train[0])
    assert not rows(d.test[0]) & rows(d.val[0])
    assert np.array_equal(load_mnist.__wrapped__(0).test[1], d.test[1])
    assert not np.array_equal(load_mnist.__wrapped__(1).test[1], d.test[1])


def test_digits8_fixture():
    d = load_digits8()
    assert d.image_size == 8 and len(d.test[1]) > 300


def test_train_config_errors_name_field_and_value():
    with pytest.raises(ConfigError, match="kd_warmup_frac must lie in \\[0, 1\\], got 1.5"):
        TrainConfig(family="vit", kd_warmup_frac=1.5)
    with pytest.raises(ConfigError, match="family must be 'resnet' or 'vit', got 'mlp'"):
        TrainConfig(family="mlp")
    # the quick config keeps the family's model choices it does not shrink (ViT: mean pooling)
    assert default_train_config("vit", quick=True).model["pool"] == "mean"
