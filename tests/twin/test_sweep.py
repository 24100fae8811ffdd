"""Sweeps on Dask: a tiny grid on a LocalCluster of 2 processes; the recommended setting, pasted into
the scenario and replayed, reproduces the reported point."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from twin.scenario import ScenarioError
from twin.sweep import Point, load_grid, mark_pareto, merge, recommend, replay_point, snippet

REPO = Path(__file__).resolve().parents[2]
SCENARIO = {
    "name": "sweep-small", "seed": 1, "duration": "36h",
    "clouds": [{"name": "c", "boot_median": "90s", "cost_per_vm_hour": 0.1}],
    "pools": [{"name": "p", "min_ready": 1, "max_total": 30,
               "demand": {"rate_per_hour": 6, "daily": "flat", "weekly": "flat", "session": {"median": "20m"}}},
              {"name": "q", "min_ready": 1, "max_total": 10,
               "demand": {"rate_per_hour": 1, "session": {"median": "30m"}}}],
}
GRID = {"seeds": [1, 2], "target_p95": 10, "grid": {"pools.*.min_ready": [0, 1, 2],
                                                       "policy.predictive": [{"enabled": False}]}}


def test_sweep_cli_recommends_a_setting_that_replays_to_its_point(tmp_path):
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(SCENARIO))
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "cli", "twin", "sweep", str(sc), "--grid", str(grid), "-o", str(out),
                        "--workers", "2", "--no-progress"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "sweep.json").read_text())
    assert len(doc["points"]) == 4  # 3 settings + the oracle
    assert sum(len(p["runs"]) for p in doc["points"]) == 8
    kinds = {p["kind"] for p in doc["points"]}
    assert kinds == {"reactive", "oracle"}
    # The oracle is the floor for zero wait: a setting that makes users wait may use less.
    assert all(p["vm_hours_over_oracle"] >= 1.0 for p in doc["points"] if p["kind"] != "oracle"
               and p["p95_wait_s"] == 0)
    assert any(p["vm_hours_over_oracle"] >= 1.0 for p in doc["points"] if p["kind"] != "oracle")
    rec = doc["recommended"]
    assert rec is not None and "recommended:" in r.stdout
    for name in ("report.html", "pareto.png", "recommended.yaml"):
        assert (out / name).stat().st_size > 0
    pasted = yaml.safe_load((out / "recommended.yaml").read_text())
    assert pasted == rec["yaml"]
    # Paste it into the scenario and replay over the same seeds: the very point reported.
    again = replay_point(sc, pasted, doc["seeds"])
    for key in ("p95_wait_s", "vm_hours", "idle_vm_hours", "cost"):
        assert again[key] == pytest.approx(rec[key], rel=1e-9, abs=1e-9)


def test_bad_grid_exits_2_naming_the_field(tmp_path):
    sc = tmp_path / "s.yaml"
    sc.write_text(yaml.safe_dump(SCENARIO))
    grid = tmp_path / "g.yaml"
    grid.write_text(yaml.safe_dump({"grid": {"pools.*.min_ready": [-1]}}))
    r = subprocess.run([sys.executable, "-m", "cli", "twin", "sweep", str(sc), "--grid", str(grid), "-o",
                        str(tmp_path / "out"), "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "min_ready" in r.stderr and not (tmp_path / "out").exists()
    grid.write_text("seeds: one\ngrid: {x: [1]}\n")
    with pytest.raises(ScenarioError, match="seeds"):
        load_grid(grid)


def _pt(label, p95, vh):
    return Point(label, (), "reactive", p95, vh, 0.0, 0.0)


def test_pareto_and_recommendation():
    pts = [_pt("a", 100, 10), _pt("b", 20, 20), _pt("c", 5, 30), _pt("d", 0, 60), _pt("e", 30, 40)]
    mark_pareto(pts)
    assert [p.label for p in pts if p.pareto] == ["a", "b", "c", "d"]
    assert recommend(pts, 10).label == "c"  # cheapest meeting the target
    assert recommend(pts, None).label in {"b", "c"}  # the knee


def test_snippet_and_merge_round_trip():
    frag = snippet([("pools.*.min_ready", 2), ("policy.period", "30s")], SCENARIO)
    assert frag == {"pools": [{"name": "p", "min_ready": 2}, {"name": "q", "min_ready": 2}],
                    "policy": {"period": "30s"}}
    merged = merge(SCENARIO, frag)
    assert [p["min_ready"] for p in merged["pools"]] == [2, 2] and merged["pools"][0]["demand"]
