"""`superserve profile --latency-only`: a table re-timed on this machine keeps its subnets and
accuracies, gets new latencies and says where they were measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from superserve.profiling import default_table_path, norm_path
from superserve.profiling.retime import machine_description, retime_table, speed_factor
from superserve.profiling.table import ProfileTable


@pytest.fixture
def small_table(tmp_path):
    """The shipped resnet table cut to 3 subnets x batch sizes 1, 2 (fast to re-time)."""
    t = ProfileTable.load(default_table_path("resnet"))
    keep = [t.subnets[0], t.subnets[len(t) // 2], t.subnets[-1]]
    subs = [replace(s, latency_ms={b: s.latency_ms[b] * 3 for b in (1, 2)},
                    latency_p99_ms={}) for s in keep]
    small = ProfileTable.build(t.family, subs, (1, 2), device=t.device, threads=t.threads,
                               checkpoint_sha256=t.checkpoint_sha256,
                               provenance={"machine": "a slower one"})
    path = tmp_path / "small.json"
    small.save(path)
    norm_path(path).write_bytes(norm_path(default_table_path("resnet")).read_bytes())
    return path, small


def test_retime_keeps_subnets_and_accuracies_and_records_the_machine(small_table, tmp_path):
    path, old = small_table
    out = tmp_path / "new.json"
    new = retime_table(path, "resnet", out, repeats=2, warmup=1)
    assert ProfileTable.load(out) == new
    assert sorted(s.accuracy for s in new.subnets) == sorted(s.accuracy for s in old.subnets)
    assert sorted(json.dumps(s.spec, sort_keys=True) for s in new.subnets) == \
        sorted(json.dumps(s.spec, sort_keys=True) for s in old.subnets)
    assert new.provenance["machine"] == machine_description()
    r = new.provenance["retimed"]
    assert r["from_machine"] == "a slower one"
    # The recorded ratio is what the two tables say, whatever this machine's speed today.
    before = {json.dumps(s.spec, sort_keys=True): s.latency_ms for s in old.subnets}
    ratios = sorted(s.latency_ms[b] / before[json.dumps(s.spec, sort_keys=True)][b]
                    for s in new.subnets for b in (1, 2))
    assert r["median_ratio_new_over_old"] == pytest.approx(ratios[len(ratios) // 2], rel=1e-6)
    assert all(v > 0 for s in new.subnets for v in s.latency_ms.values())
    assert norm_path(out).exists()  # the SubnetNorm statistics travel with it


def test_cli_refuses_to_overwrite_the_table_it_re_times(small_table):
    path, _ = small_table
    p = subprocess.run([sys.executable, "-m", "superserve.cli", "profile", "--latency-only",
                        "--table", str(path), "--out", str(path)], capture_output=True,
                       text=True, timeout=120, check=False)
    assert p.returncode != 0 and "name another file" in p.stderr


def test_speed_factor_is_the_median_ratio_of_the_pairs_it_timed(small_table):
    path, table = small_table
    pairs = [(0, 1), (2, 1), (2, 2)]
    factor, measured = speed_factor(path, "resnet", pairs, repeats=2, warmup=1)
    assert sorted((i, b) for i, b, _ in measured) == pairs
    assert all(sec > 0 for _, _, sec in measured)
    ratios = sorted(sec / table.latency_s(i, b) for i, b, sec in measured)
    assert factor == ratios[1]


def test_cli_profile_speed_prints_the_factor_on_the_start_up_check_pairs():
    p = subprocess.run([sys.executable, "-m", "superserve.cli", "profile", "--speed", "--json",
                        "--repeats", "1", "--noise-s", "0.3"], capture_output=True, text=True,
                       timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["speed_factor"] > 0 and len(doc["probes"]) == 9
    ratios = sorted(x["measured_ms"] / x["profiled_ms"] for x in doc["probes"])
    assert doc["speed_factor"] == pytest.approx(ratios[4], rel=0.01)
    noise = doc["host_noise"]  # the figures, not their values: those are the host's
    assert noise["units"] > 0 and noise["seconds"] >= 0.3 and noise["swing"] >= 1.0
    assert isinstance(noise["steady"], bool)


def test_cli_profile_speed_refuses_a_negative_noise_probe():
    p = subprocess.run([sys.executable, "-m", "superserve.cli", "profile", "--speed",
                        "--noise-s", "-1"], capture_output=True, text=True, timeout=120,
                       check=False)
    assert p.returncode != 0 and "--noise-s" in p.stderr


def test_retime_interleaves_every_subnet_and_batch_size_in_each_round(small_table, tmp_path,
                                                                      monkeypatch):
    """A host that drifts during the run must move every (subnet, batch) alike: each timed
    round calls all of them once, and progress counts rounds."""
    from superserve.profiling import retime

    seen: list[list[int]] = []
    real = retime.measure_interleaved

    def spy(fns, repeats, warmup, **kw):
        seen.append([len(fns), repeats, warmup])
        return real(fns, repeats, warmup, **kw)

    monkeypatch.setattr(retime, "measure_interleaved", spy)
    path, old = small_table
    rounds: list[tuple[str, int, int]] = []
    retime_table(path, "resnet", tmp_path / "new.json", repeats=3, warmup=1,
                 progress=lambda *a: rounds.append(a))
    assert seen == [[len(old) * len(old.batch_sizes), 3, 1]]  # one call: all pairs per round
    assert rounds == [("retime", 1, 3), ("retime", 2, 3), ("retime", 3, 3)]


def test_retime_monotone_fits_p1_p2_and_the_provenance_says_which(small_table, tmp_path):
    path, _ = small_table
    raw = retime_table(path, "resnet", tmp_path / "raw.json", repeats=2, warmup=1)
    assert raw.provenance["monotone_fit"] is False
    assert "violations_before_monotone_fit" not in raw.provenance
    fit = retime_table(path, "resnet", tmp_path / "fit.json", repeats=2, warmup=1,
                       monotone=True)
    assert fit.provenance["monotone_fit"] is True
    assert fit.p1_violations() == [] and fit.p2_violations() == []
    assert set(fit.provenance["violations_before_monotone_fit"]) == {"p1", "p2"}


def test_retime_widens_onednn_kernel_cache_unless_the_user_set_one(small_table, tmp_path,
                                                                  monkeypatch):
    """Every round cycles through every (subnet, batch): a table whose rounds need more
    kernels than oneDNN's default 1,024 would rebuild them each round and time the rebuilds
    (the shipped resnet's need 786; 13 of its subnets at every size 1-16 need 1,376)."""
    from superserve.runtime.devices import ONEDNN_CACHE_CAPACITY, widen_kernel_cache

    path, _ = small_table
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    retime_table(path, "resnet", tmp_path / "new.json", repeats=1, warmup=0)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(ONEDNN_CACHE_CAPACITY)
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "2048")
    widen_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "2048"


def test_retime_keep_level_takes_the_shape_here_and_the_level_of_the_source(small_table,
                                                                            tmp_path,
                                                                            monkeypatch):
    """--keep-level: one factor (median old / new at the largest batch size) scales every
    new latency, so the largest batch keeps the source's level and the smaller ones take
    this machine's shape; the machine stays the source's and the provenance says so."""
    from superserve.profiling import retime

    path, old = small_table
    # this machine: x2 the source at batch 2 and x1.5 at batch 1 (a cheaper small batch)
    shape = {1: 1.5, 2: 2.0}

    def fake(net, specs, pairs, dev, repeats, warmup, progress):
        return [(old.latency_s(i, b) * shape[b], old.latency_s(i, b) * shape[b] * 1.1)
                for i, b in pairs]

    monkeypatch.setattr(retime, "_time_pairs", fake)
    new = retime_table(path, "resnet", tmp_path / "kept.json", repeats=1, warmup=0,
                       keep_level=True)
    for i in range(len(old)):
        assert new.latency_s(i, 2) == pytest.approx(old.latency_s(i, 2))
        assert new.latency_s(i, 1) == pytest.approx(old.latency_s(i, 1) * 0.75)
    r = new.provenance["retimed"]
    assert r["level"]["kept_at_batch"] == 2 and r["level"]["factor"] == pytest.approx(0.5)
    assert r["median_ratio_new_over_old"] == pytest.approx(2.0)  # as timed, before scaling
    assert new.provenance["machine"] == "a slower one"
    assert r["timed_on"] == machine_description()
    plain = retime_table(path, "resnet", tmp_path / "plain.json", repeats=1, warmup=0)
    assert plain.latency_s(0, 2) == pytest.approx(old.latency_s(0, 2) * 2)
    assert "level" not in plain.provenance["retimed"]
    assert plain.provenance["machine"] == machine_description()


def test_cli_keep_level_needs_latency_only():
    p = subprocess.run([sys.executable, "-m", "superserve.cli", "profile", "--keep-level"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode != 0 and "it needs --latency-only" in p.stderr
