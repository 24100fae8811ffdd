"""The predictive sizer in the twin: fallback said in the events, shadow mode, exact pass skipping."""
from __future__ import annotations

import copy

import pytest

from reports.metrics import compute_metrics
from twin.run import simulate
from twin.scenario import ScenarioError, validate

BASE = {
    "name": "predictive-small", "seed": 5, "duration": "3d",
    "clouds": [{"name": "home", "boot_median": "90s", "cost_per_vm_hour": 0.05},
               {"name": "far", "region": "far", "priority": 1, "boot_median": "60s"}],
    "pools": [{"name": "p", "min_ready": 2, "max_total": 30,
               "demand": {"rate_per_hour": 8, "session": {"median": "40m"},
                          "locations": {"home": 0.7, "far": 0.3}}}],
    "policy": {"predictive": {"enabled": True, "floor": 0, "service_level": 0.95}},
}


def _scenario(**predictive):
    raw = copy.deepcopy(BASE)
    raw["policy"]["predictive"].update(predictive)
    return validate(raw, source="test.yaml")


def _policy_notes(events):
    return [e for e in events if e.kind == "policy"]


def test_first_day_falls_back_to_reactive_visibly():
    events = simulate(_scenario())
    notes = _policy_notes(events)
    fallback = [e for e in notes if "too little history" in e.details["message"]]
    assert fallback and fallback[0].t == 0.0 and fallback[0].details["fallback"] == "reactive"
    assert all(e.t < 86400 for e in fallback)  # 24 h of history later, it forecasts
    assert any(e.details["message"] == "forecast: refitted" and e.t >= 86400 for e in notes)
    targets = [e.details["target"] for e in notes if e.details["message"] == "forecast: reserve"]
    assert targets[0] == 2 and 0 in targets  # reactive min_ready first, then the forecast (quiet hours: 0)


def test_shadow_mode_logs_beside_the_reactive_policy():
    reactive = copy.deepcopy(BASE)
    del reactive["policy"]["predictive"]
    plain = [e for e in simulate(validate(reactive, source="r.yaml")) if e.kind != "policy"]
    shadow = simulate(_scenario(shadow=True))
    assert any(e.details.get("shadow") for e in _policy_notes(shadow))
    assert [e.to_dict() for e in shadow if e.kind != "policy"] == [e.to_dict() for e in plain]


def test_skipping_idle_passes_stays_exact_with_changing_targets():
    sc = _scenario()
    a = simulate(sc, skip_idle_passes=True)
    b = simulate(sc, skip_idle_passes=False)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]


def test_predictive_saves_idle_vm_hours():
    sc = _scenario()
    raw = copy.deepcopy(BASE)
    raw["policy"]["predictive"]["enabled"] = False
    reactive = compute_metrics(simulate(validate(raw, source="r.yaml")))
    predictive = compute_metrics(simulate(sc))
    assert predictive["vm_hours"]["ready"] < reactive["vm_hours"]["ready"]


@pytest.mark.parametrize("field,value,reason", [
    ("service_level", 1.5, "at most"), ("enabled", "yes", "true or false"), ("refit", "90m", "whole number"),
    ("bogus", 1, "unknown key"), ("floor", -1, "at least 0")])
def test_bad_predictive_section_names_the_field(field, value, reason):
    raw = copy.deepcopy(BASE)
    raw["policy"]["predictive"][field] = value
    with pytest.raises(ScenarioError, match=rf"test.yaml: policy\.predictive\.{field}: .*{reason}"):
        validate(raw, source="test.yaml")


def test_calendar_grows_the_reserve_as_a_beam_time_starts():
    from pathlib import Path

    from twin.scenario import load_scenario

    path = Path(__file__).resolve().parents[2] / "scenarios" / "beamtime-calendar.yaml"
    with_cal = load_scenario(path, overrides=[("duration", "2d12h")])
    assert len(with_cal.extra["calendar"].entries) == 2

    def target_at(events, t):
        notes = [e for e in events if e.kind == "policy" and e.pool == "mantid"
                 and e.details["message"] == "forecast: reserve" and e.t <= t]
        return notes[-1].details["target"]

    start = 2 * 86400 + 8 * 3600
    plain = load_scenario(path, overrides=[("duration", "2d12h"), ("calendar", [])])
    assert target_at(simulate(with_cal), start + 1) > target_at(simulate(plain), start + 1)


def test_statsmodels_engine_gives_the_same_run():
    fast = [e.to_dict() for e in simulate(_scenario(engine="recursion"))]
    ref = [e.to_dict() for e in simulate(_scenario(engine="statsmodels"))]
    assert fast == ref
