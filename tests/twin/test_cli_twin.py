"""`daaas twin run`, `daaas twin compare` and `daaas demo` through `cli.main`."""
from __future__ import annotations

import json

import pytest

from cli import main
from core.events import parse_lines
from twin.run import SCENARIO_DIR


def test_twin_run_writes_report_metrics_and_events(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["twin", "run", str(SCENARIO_DIR / "abandoned-sessions.yaml"), "-o", str(out), "--no-progress",
                 "--set", "duration=1d"]) == 0
    printed = capsys.readouterr().out
    assert "requests" in printed and str(out / "report.html") in printed
    html = (out / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "<img" in html and "src=\"data:image" in html
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("requests", "wait_s", "vm_hours", "cost", "reclaimed", "failed_boots", "per_cloud"):
        assert key in metrics
    assert {"p50", "p95", "p99", "max"} <= set(metrics["wait_s"])
    assert {"booting", "ready", "allocated", "abandoned", "total"} <= set(metrics["vm_hours"])
    events = parse_lines((out / "events.jsonl").read_text().splitlines(), source="events.jsonl")
    assert events[0].kind == "run" and metrics["requests"] == sum(1 for e in events if e.kind == "request") > 0
    assert metrics["reclaimed"] > 0  # this scenario reclaims abandoned VMs


def test_twin_compare_tables_both_settings(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["twin", "compare", str(SCENARIO_DIR / "abandoned-sessions.yaml"), "--set",
                 "pools.mantid.min_ready=1,3", "--set", "duration=1d", "-o", str(out)]) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    assert "pools.mantid.min_ready=1" in header and "pools.mantid.min_ready=3" in header
    assert any(line.startswith("requests") for line in table.splitlines())
    rows = json.loads((out / "compare.json").read_text())
    assert len(rows) == 2
    a, b = rows.values()
    assert a["vm_hours"]["ready"] < b["vm_hours"]["ready"]  # a bigger reserve idles longer


def test_demo_writes_a_report(tmp_path, capsys, monkeypatch):
    # The demo replays the default week; a shorter week keeps the test quick without changing the demo.
    import twin.scenario

    real = twin.scenario.load_scenario
    monkeypatch.setattr(twin.scenario, "load_scenario",
                        lambda path, overrides=(), seed=None: real(path, overrides=[*overrides, ("duration", "1d")],
                                                                  seed=seed))
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "facility-week" in printed and str(out / "report.html") in printed
    for name in ("report.html", "metrics.json", "events.jsonl"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize("argv", [["twin"], ["twin", "run"], ["twin", "compare", "x.yaml"]])
def test_usage_errors_exit_2(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        status = e.code
    assert status == 2
