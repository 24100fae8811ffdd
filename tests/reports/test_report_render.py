"""report.html is self-contained with its plots embedded; write_outputs writes all three or nothing."""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from core.events import Event
from reports.metrics import compute_metrics, dumps_metrics
from reports.render import OUTPUTS, render_report, write_events, write_outputs


def E(t, kind, pool=None, cloud=None, vm=None, user=None, **details):  # noqa: N802
    return Event(t=float(t), kind=kind, pool=pool, cloud=cloud, vm=vm, user=user, details=details)


def day_log(n_sessions: int = 60) -> list[Event]:
    """A small day on two pools and two clouds, with an outage, a maintenance window and a backoff."""
    log = [E(0, "run", scenario="t", seed=3, start=0, end=86400, time_base="sim", pools=["p", "q"],
             clouds={"a": {"cost_per_hour": 0.1, "region": "home"}, "b": {"cost_per_hour": 0.3, "region": "far"}}),
           E(20000, "cloud_down", None, "b", mode="down"), E(23000, "cloud_up", None, "b"),
           E(20500, "cloud_status", None, "b", status="backoff", verdict="failing", backoff_s=600),
           E(24000, "cloud_status", None, "b", status="ok", verdict="good", backoff_s=0),
           E(40000, "maintenance_start", None, "a", end=43600), E(43600, "maintenance_end", None, "a")]
    for i in range(n_sessions):
        t0 = 1000 + i * 1300
        pool, cloud, vm = ("p", "q")[i % 2], ("a", "b")[i % 3 == 0], f"vm{i}"
        log += [E(t0, "launch", pool, cloud, vm, reason="reserve", probe=False, cost_per_hour=0.2, region="x"),
                E(t0 + 90, "ready", pool, cloud, vm, boot_s=90.0),
                E(t0 + 100 + (i % 7) * 20, "request", pool, None, None, f"u{i}", location="home"),
                E(t0 + 100 + (i % 7) * 20, "assign", pool, cloud, vm, f"u{i}", wait_s=float((i % 5) * 15),
                  request=f"r{i}"),
                E(t0 + 3000, "release", pool, cloud, vm, f"u{i}"),
                E(t0 + 3000, "terminate", pool, cloud, vm, f"u{i}", reason="release", state="allocated")]
    return sorted(log, key=lambda e: e.t)


def images(html: str) -> list[bytes]:
    return [base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def assert_self_contained(html: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<link" not in html.lower() and "<script" not in html.lower()
    assert "@import" not in html and "url(" not in html


def test_render_report_is_self_contained_with_the_plots(tmp_path):
    path = render_report(day_log(), tmp_path / "r", title="A <day> & a night")
    assert path == tmp_path / "r" / "report.html"
    html = path.read_text(encoding="utf-8")
    assert_self_contained(html)
    pngs = images(html)
    assert len(pngs) == 3  # timeline, waits, VM-hours per cloud
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") and len(p) > 2000 for p in pngs)
    assert "A &lt;day&gt; &amp; a night" in html  # the title is escaped
    for text in ("Headline", "wait p95 (s)", "VM-hours ready (idle)", "share of launches: a", "Per pool",
                 "Cloud events", "outage", "maintenance", "backoff"):
        assert text in html
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["report.html"]  # no temporary left


def test_render_uses_given_metrics(tmp_path):
    m = compute_metrics(day_log())
    m["requests"] = 123456789  # a marker: the tables come from what the caller passed
    html = render_report(day_log(), tmp_path, title="t", metrics=m).read_text()
    assert "123,456,789" in html


def test_render_edge_cases(tmp_path):
    for i, log in enumerate([[], [E(0, "run", end=60)], [E(5, "request", "p", user="u")]]):
        html = render_report(log, tmp_path / str(i), title="empty").read_text()
        assert_self_contained(html)
        assert len(images(html)) == 3


def test_render_unix_time_base_and_long_horizon(tmp_path):
    t0 = 1_700_000_000.0
    log = [E(t0, "run", start=t0, end=t0 + 30 * 86400, time_base="unix")]
    for i in range(3000):  # more changes than plot points: the series is sampled
        t = t0 + i * 800
        log += [E(t, "launch", "p", "a", f"v{i}"), E(t + 60, "ready", "p", "a", f"v{i}"),
                E(t + 700, "terminate", "p", "a", f"v{i}", reason="recycle")]
    html = render_report(sorted(log, key=lambda e: e.t), tmp_path, title="live").read_text()
    assert len(images(html)) == 3


def test_no_pyplot_figures_leak(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    render_report(day_log(), tmp_path, title="t")
    assert plt.get_fignums() == before


def test_write_outputs_writes_all_three(tmp_path):
    log = day_log()
    out = tmp_path / "deep" / "run"
    m = write_outputs(log, out, title="day")
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    assert (out / "metrics.json").read_text() == dumps_metrics(m)
    assert m == compute_metrics(log)
    lines = (out / "events.jsonl").read_text().splitlines()
    assert lines == [e.to_json() for e in log]
    assert sorted(p.name for p in out.parent.iterdir()) == ["run"]  # no temporary directory left
    assert_self_contained((out / "report.html").read_text())


def test_same_events_give_byte_identical_metrics(tmp_path):
    write_outputs(day_log(), tmp_path / "one", title="x")
    write_outputs(day_log(), tmp_path / "two", title="x")
    for name in ("metrics.json", "events.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    # The same events in another order (ties too) give the same metrics.
    write_outputs(list(reversed(day_log())), tmp_path / "rev", title="x")
    assert (tmp_path / "rev" / "metrics.json").read_bytes() == (tmp_path / "one" / "metrics.json").read_bytes()
    other = day_log(61)
    write_outputs(other, tmp_path / "three", title="x")
    assert (tmp_path / "three" / "metrics.json").read_bytes() != (tmp_path / "one" / "metrics.json").read_bytes()


def test_write_events_matches_to_json_on_awkward_values(tmp_path):
    log = [E(0.1, "policy", "p", None, None, "ü", message="naïve \"quoted\" \n line", nan=float("nan"),
             big=10**20, nested={"a": [1, 2.5, None, True]}),
           E(1e-7, "run", clouds={}), E(3, "warn", "p", "a", "v", reason="idle", reclaim_at=1.5e9)]
    write_events(log, tmp_path / "e.jsonl")
    assert (tmp_path / "e.jsonl").read_text(encoding="utf-8").splitlines() == [e.to_json() for e in log]


class Unserialisable:
    pass


def test_failure_leaves_nothing_half_written(tmp_path):
    bad = day_log() + [E(90000, "policy", message=Unserialisable())]
    with pytest.raises(TypeError):
        write_outputs(bad, tmp_path / "new", title="x")
    assert list(tmp_path.iterdir()) == []  # neither the directory nor a temporary one

    old = tmp_path / "old"
    write_outputs(day_log(), old, title="x")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    with pytest.raises(TypeError):
        write_outputs(bad, old, title="x")
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("keep")
    with pytest.raises(NotADirectoryError):
        write_outputs(day_log(), tmp_path / "f", title="x")
    assert (tmp_path / "f").read_text() == "keep"


def test_metrics_json_is_plain_json(tmp_path):
    write_outputs(day_log(), tmp_path / "o", title="x")
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    for key in ("requests", "wait_s", "vm_hours", "cost", "reclaimed", "failed_boots", "per_cloud", "per_pool",
                "horizon_h", "terminations", "warnings", "launch_failures", "api_errors", "unserved"):
        assert key in m
    assert Path(tmp_path / "o" / "report.html").stat().st_size > 10000
