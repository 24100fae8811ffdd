"""Calibration: a scenario fitted to a twin run's own events.jsonl reproduces that run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from reports.render import write_events
from twin.calibrate import calibrate
from twin.run import simulate
from twin.scenario import load_scenario, validate

REPO = Path(__file__).resolve().parents[2]
RAW = {
    "name": "calib-source", "seed": 11, "duration": "4d", "start_weekday": 2,
    "clouds": [{"name": "home", "boot_median": "80s", "boot_sigma": 0.3, "cost_per_vm_hour": 0.1},
               {"name": "cloud", "region": "eu", "priority": 1, "boot_median": "50s", "quota": 100}],
    "pools": [{"name": "p", "min_ready": 2, "max_total": 60,
               "demand": {"rate_per_hour": 30, "daily": "office", "weekly": "weekdays",
                          "session": {"median": "40m", "sigma": 0.6}, "abandon_rate": 0.1,
                          "locations": {"home": 0.6, "eu": 0.4}}}],
}


def _arrivals_per_hour(events, hours):
    return sum(1 for e in events if e.kind == "request") / hours


def _median_session(events):
    start, out = {}, []
    for e in events:
        if e.kind == "assign":
            start[e.vm] = e.t
        elif e.kind in ("release", "abandon") and e.vm in start:
            out.append(e.t - start.pop(e.vm))
    return float(np.median(out))


def test_calibrated_scenario_reproduces_arrivals_and_sessions(tmp_path):
    original = simulate(validate(RAW, source="src.yaml"))
    log = tmp_path / "events.jsonl"
    write_events(original, log)
    out = tmp_path / "calibrated.yaml"
    r = subprocess.run([sys.executable, "-m", "cli", "twin", "calibrate", str(log), "-o", str(out)], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sc = load_scenario(out)
    replay = simulate(sc)
    hours = 4 * 24
    a0, a1 = _arrivals_per_hour(original, hours), _arrivals_per_hour(replay, hours)
    s0, s1 = _median_session(original), _median_session(replay)
    assert abs(a1 - a0) / a0 < 0.10, (a0, a1)
    assert abs(s1 - s0) / s0 < 0.10, (s0, s1)
    demand = sc.demand["p"]
    assert abs(demand.abandon_rate - 0.1) < 0.05
    assert dict(demand.locations)["home"] > dict(demand.locations)["eu"]
    assert max(demand.daily) == 1.0 and demand.daily[3] < 0.2  # the office night is quiet
    boot = {c.name: c.boot_median_s for c in sc.clouds}
    assert abs(boot["home"] - 80) < 15


def test_calibrate_rejects_a_bad_log(tmp_path):
    log = tmp_path / "bad.jsonl"
    log.write_text(json.dumps({"t": 0, "kind": "run", "details": {}}) + "\n" + '{"t": "x", "kind": "request"}\n')
    r = subprocess.run([sys.executable, "-m", "cli", "twin", "calibrate", str(log), "-o", str(tmp_path / "o.yaml")],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "bad.jsonl:2" in r.stderr
    assert not (tmp_path / "o.yaml").exists()


def test_calibrated_yaml_is_a_valid_scenario():
    raw = calibrate(simulate(validate(RAW, source="src.yaml")))
    assert validate(yaml.safe_load(yaml.safe_dump(raw)), source="c.yaml").config.pools[0].name == "p"
