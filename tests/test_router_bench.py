"""`superserve bench router` end to end at a low rate (the command, not its timings)."""

from __future__ import annotations

import json

from superserve.cli import main


def test_bench_router_json(capsys, tmp_path):
    from conftest import synthetic_table

    table = tmp_path / "resnet.json"
    synthetic_table().save(table)
    rc = main(["bench", "router", "--table", str(table), "--rate", "200", "--duration-s", "1",
               "--no-peak", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    m = out["at_rate"]
    assert m["requests"] == 200 and m["outcomes"] == {"completed": 200}
    assert m["added_ms_p50"] > 0 and m["added_ms_p99"] >= m["added_ms_p50"]
    assert out["peak_sustained_rps"] is None and out["batches"] > 0
