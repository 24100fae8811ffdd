"""Scenario validation: a broken scenario exits 2, names the file and the field path, writes nothing."""
from __future__ import annotations

import copy

import pytest
import yaml

from cli import main
from twin.run import SCENARIO_DIR
from twin.scenario import ScenarioError, load_scenario, read_raw

BASE = read_raw(SCENARIO_DIR / "facility-week.yaml")


def _broken(mutate):
    raw = copy.deepcopy(BASE)
    mutate(raw)
    return raw


def _set(path, value):
    def mutate(raw):
        node = raw
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value
    return mutate


CASES = [
    ("unknown key", _set(["pools", 0, "demand", "rate_per_hours"], 3), "pools[0].demand.rate_per_hours",
     "unknown key"),
    ("unknown top key", _set(["durration"], "2d"), "durration", "unknown key"),
    ("wrong type", _set(["pools", 0, "min_ready"], "three"), "pools[0].min_ready", "expected an integer"),
    ("wrong type mapping", _set(["clouds", 1], ["partner"]), "clouds[1]", "expected a mapping"),
    ("negative rate", _set(["pools", 0, "demand", "rate_per_hour"], -2), "pools[0].demand.rate_per_hour",
     "at least 0"),
    ("rate above 1", _set(["clouds", 0, "boot_failure_rate"], 1.5), "clouds[0].boot_failure_rate", "at most 1"),
    ("window ends before it starts", _set(["clouds", 0, "maintenance"], [{"start": "2d", "end": "1d"}]),
     "clouds[0].maintenance[0].end", "before"),
    ("outage ends before it starts", _set(["clouds", 2, "outages"], [{"start": "5h", "end": "5h"}]),
     "clouds[2].outages[0].end", "before"),
    ("surge ends before it starts", _set(["pools", 1, "demand", "surges"], [{"start": "3d", "end": "1d",
                                                                            "factor": 2}]),
     "pools[1].demand.surges[0].end", "before"),
    ("unknown cloud in a pool", _set(["pools", 2, "clouds"], ["aws", "gcp"]), "pools[2].clouds[1]", "'gcp'"),
    ("bad duration string", _set(["pools", 0, "idle_timeout"], "2 hours"), "pools[0].idle_timeout",
     "not a duration"),
    ("bad duration top", _set(["duration"], "soon"), "duration", "not a duration"),
    ("unknown outage mode", _set(["clouds", 0, "outages"], [{"start": "1h", "end": "2h", "mode": "gone"}]),
     "clouds[0].outages[0].mode", "expected one of"),
    ("max_total below min_ready", _set(["pools", 0, "max_total"], 1), "pools[0].max_total", "min_ready"),
    ("missing required", lambda raw: raw["pools"][0].pop("demand"), "pools[0].demand", "required"),
    ("duplicate cloud", _set(["clouds", 1, "name"], "aws"), "clouds[2].name", "duplicate"),
    ("bad profile", _set(["pools", 0, "demand", "daily"], "weekend"), "pools[0].demand.daily", "unknown profile"),
]


@pytest.mark.parametrize("mutate,path,reason", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_scenario_exits_2_names_the_field_and_writes_nothing(tmp_path, capsys, mutate, path, reason):
    src = tmp_path / "broken.yaml"
    src.write_text(yaml.safe_dump(_broken(mutate)))
    out = tmp_path / "out"
    assert main(["twin", "run", str(src), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(src) in err and f": {path}: " in err and reason in err, err
    assert not out.exists()


SET_CASES = [
    ("pools.mantid.demand.rate_per_hour=-1", "pools[0].demand.rate_per_hour"),
    ("pools.nosuch.min_ready=3", "no item named 'nosuch'"),
    ("policy.period=fast", "policy.period"),
    ("pools.mantid.demand.rate_per_hour.x=1", "pools.mantid.demand.rate_per_hour"),
    ("=3", "--set"),
    ("noequals", "expected KEY=VALUE"),
    ("clouds.aws.quota=[1", "not valid YAML"),
]


@pytest.mark.parametrize("setting,fragment", SET_CASES, ids=[s for s, _ in SET_CASES])
def test_bad_set_exits_2_and_writes_nothing(tmp_path, capsys, setting, fragment):
    out = tmp_path / "out"
    assert main(["twin", "run", str(SCENARIO_DIR / "facility-week.yaml"), "-o", str(out), "--no-progress",
                 "--set", setting]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_compare_validates_every_combination_before_running(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["twin", "compare", str(SCENARIO_DIR / "facility-week.yaml"), "--set",
                 "pools.mantid.min_ready=1,-3", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pools[0].min_ready" in err and "done:" not in err
    assert not out.exists()


def test_not_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools: [\n  - name: x\n  demand: {")
    assert main(["twin", "run", str(bad), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "bad.yaml: line" in capsys.readouterr().err
    assert main(["twin", "run", str(tmp_path / "nope.yaml"), "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "no such scenario file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("path", sorted(SCENARIO_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_scenarios_validate_and_open_with_a_comment(path):
    sc = load_scenario(path)
    assert sc.name == path.stem
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# {path.stem}:")
    assert "What a planner learns" in path.read_text()


def test_error_is_a_value_error_naming_the_source():
    with pytest.raises(ScenarioError, match=r"^x\.yaml: pools: required key is missing"):
        from twin.scenario import validate
        validate({"clouds": [{"name": "a"}]}, source="x.yaml")
