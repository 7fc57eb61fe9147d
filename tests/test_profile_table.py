import json

import pytest

from superserve.errors import TableError
from superserve.profiling.table import ProfileTable, SubnetProfile, isotonic_increasing


def make_table(rows, accs, batch_sizes=(1, 2, 4)):
    subnets = [SubnetProfile(id=i, spec={"i": i}, accuracy=a,
                             latency_ms=dict(zip(batch_sizes, r)))
               for i, (r, a) in enumerate(zip(rows, accs))]
    return ProfileTable.build("resnet", subnets, batch_sizes, threads=2, load_ms=5.0)


def test_round_trip(tmp_path):
    t = make_table([[1, 2, 3], [2, 3, 5]], [0.9, 0.95])
    path = tmp_path / "t.json"
    t.save(path)
    t2 = ProfileTable.load(path)
    assert t2 == t
    assert t2.lat_s == t.lat_s
    assert json.loads(path.read_text())["schema_version"] == 1


def test_build_sorts_by_latency_and_renumbers():
    t = make_table([[5, 6, 7], [1, 2, 3]], [0.99, 0.9])
    assert [s.accuracy for s in t.subnets] == [0.9, 0.99]
    assert [s.id for s in t.subnets] == [0, 1]
    assert t.fastest_latency_s() == pytest.approx(1e-3)


def test_latency_interpolation():
    t = make_table([[1, 2, 4]], [0.9])
    assert t.latency_s(0, 3) == pytest.approx(3e-3)
    assert t.latency_s(0, 8) == pytest.approx(8e-3)  # extrapolated from the last two
    assert t.latency_s(0, 1) == pytest.approx(1e-3)


def test_p1_p2_violations_and_monotone_fit():
    # subnet 1 is more accurate but faster at batch 4 than subnet 0; subnet 0 dips at b=2
    t = make_table([[1, 0.5, 3], [2, 3, 2.5]], [0.9, 0.95])
    assert t.p1_violations()
    assert t.p2_violations()
    m = t.monotone()
    assert m.p1_violations() == [] and m.p2_violations() == []
    assert m.provenance["monotone_fit"] is True


def test_isotonic():
    assert isotonic_increasing([1, 3, 2, 4]) == [1, 2.5, 2.5, 4]


@pytest.mark.parametrize("mutate,msg", [
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d.pop("subnets"), "subnets"),
    (lambda d: d["subnets"][0]["latency_ms"].pop("2"), "lacks batch sizes"),
    (lambda d: d["subnets"][0].update(accuracy=3.0), "accuracy"),
    (lambda d: d.update(batch_sizes=[2, 1, 4]), "batch_sizes"),
])
def test_malformed_tables_give_clear_errors(mutate, msg):
    d = make_table([[1, 2, 3]], [0.9]).to_dict()
    mutate(d)
    with pytest.raises(TableError, match=msg):
        ProfileTable.from_dict(d)


def test_not_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{nope")
    with pytest.raises(TableError, match="not valid JSON"):
        ProfileTable.load(p)


def test_scaled_keeps_ids_and_multiplies_every_latency():
    from superserve.errors import TableError
    from superserve.sim.synthetic import synthetic_table

    t = synthetic_table()
    s = t.scaled(1.25)
    assert [x.spec for x in s.subnets] == [x.spec for x in t.subnets]
    assert s.acc == t.acc and s.fastest_s == pytest.approx(1.25 * t.fastest_s)
    for a, b in zip(s.lat_s, t.lat_s):
        assert a == pytest.approx(tuple(1.25 * v for v in b))
    assert s.provenance["latency_scale"] == 1.25
    assert s.scaled(2.0).provenance["latency_scale"] == 2.5
    with pytest.raises(TableError, match="latency scale"):
        t.scaled(0)


def test_cut_keeps_some_subnets_at_some_batch_sizes():
    t = make_table([[1, 2, 3], [2, 3, 5], [4, 6, 9]], [0.9, 0.95, 0.99])
    c = t.cut([2, 0], (1, 4))
    assert c.batch_sizes == (1, 4) and [s.id for s in c.subnets] == [0, 1]
    assert [s.spec for s in c.subnets] == [{"i": 0}, {"i": 2}]  # renumbered in latency order
    assert c.lat_s == ((1e-3, 3e-3), (4e-3, 9e-3))
    assert c.threads == 2 and c.load_ms == 5.0
    with pytest.raises(TableError, match="batch sizes"):
        t.cut([0], (1, 8))
    with pytest.raises(TableError, match="subnet indices"):
        t.cut([3], (1,))
