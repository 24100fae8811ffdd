"""Trace replay: SWF (the LCG log) and CSV, mapping, rate scaling, and errors naming file and line."""
from __future__ import annotations

import copy
import gzip
from pathlib import Path

import pytest

from reports.metrics import compute_metrics
from twin.run import simulate
from twin.scenario import ScenarioError, load_scenario, validate
from twin.trace import TraceError, read_swf, trace_arrivals

REPO = Path(__file__).resolve().parents[2]
LCG = REPO.parent / "shared" / "traces" / "LCG.swf.gz"
SWF_LINE = "{n} {t} -1 {run} 1 -1 -1 -1 1200 -1 -1 {user} 1 -1 -1 {part} -1 -1\n"


def _scenario(tmp_path: Path, trace: dict, duration: str = "1d") -> dict:
    return {
        "name": "trace-test", "seed": 1, "duration": duration,
        "clouds": [{"name": "c", "boot_median": "60s"}],
        "pools": [{"name": "a", "min_ready": 1, "demand": {"rate_per_hour": 0, "abandon_rate": 0}},
                  {"name": "b", "min_ready": 1, "demand": {"rate_per_hour": 0, "abandon_rate": 0}}],
        "trace": trace,
    }


def _write_swf(path: Path, rows: list[tuple[int, int, int, int]], *, gz: bool = False) -> Path:
    text = "; Version: 2.2\n" + "".join(SWF_LINE.format(n=i + 1, t=t, run=r, user=u, part=p)
                                         for i, (t, r, u, p) in enumerate(rows))
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_lcg_trace_reads_completely():
    jobs = read_swf(LCG)
    assert len(jobs) == 188041
    assert jobs[0].t == 0.0 and all(a.t <= b.t for a, b in zip(jobs[:1000], jobs[1:1001], strict=True))


def test_lcg_replay_scenario_runs_at_an_interactive_rate():
    sc = load_scenario(REPO / "scenarios" / "lcg-replay.yaml", overrides=[("duration", "2d")])
    arr = trace_arrivals(sc)
    assert set(arr) == {"mantid", "mantid-large-memory", "gpu"}
    per_hour = sum(len(v) for v in arr.values()) / 48
    assert 5 < per_hour < 20  # ~712 jobs/h thinned by 0.014
    m = compute_metrics(simulate(sc))
    assert m["requests"] == sum(len(v) for v in arr.values())


def test_swf_mapping_shift_scale_and_thinning(tmp_path):
    f = _write_swf(tmp_path / "t.swf.gz", [(100, 600, 1, 1), (200, 30, 2, 2), (400, 900, 3, 1), (9000, 60, 1, 1)],
                   gz=True)
    raw = _scenario(tmp_path, {"path": str(f), "pools": {"by": "user", "map": {"1": "a"}, "default": "b"},
                               "locations": {"by": "partition", "map": {"2": "far"}, "default": "home"},
                               "time_scale": 0.5, "time_shift": 10, "session_scale": 2, "min_session": 120})
    sc = validate(raw, source=str(tmp_path / "s.yaml"))
    arr = trace_arrivals(sc)
    assert [(x.t, x.session_s) for x in arr["a"]] == [(10.0, 1200.0), (10.0 + 8900 * 0.5, 120.0)]
    assert [(x.t, x.location, x.session_s) for x in arr["b"]] == [(60.0, "far", 120.0), (160.0, "home", 1800.0)]
    raw["trace"]["rate_scale"] = 3
    many = trace_arrivals(validate(copy.deepcopy(raw), source="s.yaml"))
    assert sum(len(v) for v in many.values()) == 12
    raw["trace"]["rate_scale"] = 0.5
    once = trace_arrivals(validate(copy.deepcopy(raw), source="s.yaml"))
    again = trace_arrivals(validate(copy.deepcopy(raw), source="s.yaml"))
    assert once == again and sum(len(v) for v in once.values()) < 4  # seeded thinning


def test_csv_trace_with_mapped_columns(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("when,length,queue,who,site\n0,600,x,u1,home\n3600,1200,y,u2,far\n7200,60,x,u1,home\n")
    raw = _scenario(tmp_path, {"path": str(f), "csv": {"columns": {"arrival": "when", "duration": "length",
                                                                   "pool": "queue", "user": "who",
                                                                   "location": "site"}},
                               "pools": {"by": "pool", "map": {"x": "a", "y": "b"}},
                               "locations": {"by": "location", "map": {"far": "far"}, "default": "home"}})
    sc = validate(raw, source="s.yaml")
    events = simulate(sc)
    reqs = [(e.t, e.pool, e.details["location"]) for e in events if e.kind == "request"]
    assert reqs == [(0.0, "a", "home"), (3600.0, "b", "far"), (7200.0, "a", "home")]


def test_a_bad_swf_line_names_file_line_and_reason(tmp_path):
    f = _write_swf(tmp_path / "bad.swf", [(0, 10, 1, 1), (5, 10, 1, 1)])
    lines = f.read_text().splitlines()
    lines[2] = lines[2].replace(" 10 ", " ten ", 1)
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceError, match=r"bad\.swf:3: field 'run' is not a number: 'ten'"):
        read_swf(f)
    f.write_text("; x\n1 2 3\n")
    with pytest.raises(ScenarioError, match=r"bad\.swf:2: expected 18 fields, got 3"):
        validate(_scenario(tmp_path, {"path": str(f), "pools": {"by": "user", "default": "a"}}), source="s.yaml")


def test_a_bad_csv_line_names_file_line_and_reason(tmp_path):
    f = tmp_path / "log.csv"
    f.write_text("t,d\n0,5\nsoon,5\n")
    raw = _scenario(tmp_path, {"path": str(f), "csv": {"columns": {"arrival": "t", "duration": "d"}},
                               "pools": {"by": "t", "default": "a"}})
    with pytest.raises(TraceError, match=r"log\.csv:3: column 't' is not a number of seconds: 'soon'"):
        validate(raw, source="s.yaml")


@pytest.mark.parametrize("trace,where", [
    ({"path": "nope.swf", "pools": {"by": "user", "default": "a"}}, "trace.path"),
    ({"path": "LCG", "pools": {"by": "colour"}}, "trace.pools.by"),
    ({"path": "LCG", "pools": {"by": "user"}, "rate_scale": -1}, "trace.rate_scale"),
    ({"path": "LCG", "pools": {"by": "user"}, "format": "xls"}, "trace.format"),
])
def test_bad_trace_section_names_the_field(tmp_path, trace, where):
    trace = dict(trace)
    if trace["path"] == "LCG":
        trace["path"] = str(_write_swf(tmp_path / "ok.swf", [(0, 10, 1, 1)]))
    with pytest.raises(ScenarioError, match=rf"s\.yaml: {where.replace('.', chr(92) + '.')}: "):
        validate(_scenario(tmp_path, trace), source="s.yaml")


def test_a_trace_mapping_to_an_unknown_pool_exits_2(tmp_path):
    import subprocess
    import sys

    import yaml

    f = _write_swf(tmp_path / "t.swf", [(0, 10, 1, 1)])
    raw = _scenario(tmp_path, {"path": str(f), "pools": {"by": "user", "map": {"1": "nope"}}})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    r = subprocess.run([sys.executable, "-m", "cli", "twin", "run", str(tmp_path / "s.yaml"), "-o",
                        str(tmp_path / "out"), "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "trace.pools: no pool named 'nope'" in r.stderr
    assert not (tmp_path / "out").exists()
