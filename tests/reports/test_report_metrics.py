"""compute_metrics on small hand-written logs: every number worked out by hand in the comments."""
from __future__ import annotations

import json

import pytest

from core.events import Event
from reports.metrics import check_event, compute_metrics, dumps_metrics, round_sig


def E(t, kind, pool=None, cloud=None, vm=None, user=None, **details):  # noqa: N802 - reads like a table row
    return Event(t=float(t), kind=kind, pool=pool, cloud=cloud, vm=vm, user=user, details=details)


RUN = E(0, "run", scenario="hand", seed=1, start=0, end=7200, time_base="sim", pools=["p"],
        clouds={"a": {"cost_per_hour": 1.0, "region": "home"}, "b": {"cost_per_hour": 2.0, "region": "far"}})

# vm1 (a, 0.5/h): booting 0-360, ready 360-1000, allocated 1000-3600, abandoned 3600-6300 (reclaimed idle)
# vm2 (b, header rate 2/h): booting 0-720, ready 720-1800, allocated 1800-4000 (released, terminated)
# vm3 (a, 0.5/h): booting 1800-2160, ready 2160-7200 (open: closed at the header's end)
# vm4 (c, no rate anywhere: 0): booting 100-460, then boot_failed
# vm5 (a, 0.5/h): booting 6000-7200 (open)
LOG = [
    RUN,
    E(0, "launch", "p", "a", "vm1", reason="reserve", probe=False, cost_per_hour=0.5, region="home"),
    E(0, "launch", "p", "b", "vm2", reason="reserve", probe=False),
    E(100, "launch", "p", "c", "vm4", reason="reserve", probe=False),
    E(200, "launch_failed", "p", "b", None, error="quota", quota=True),
    E(200, "api_error", None, "b", None, call="launch", error="boom"),
    E(360, "ready", "p", "a", "vm1", boot_s=360),
    E(460, "boot_failed", "p", "c", "vm4", reason="error"),
    E(720, "ready", "p", "b", "vm2", boot_s=720),
    E(1000, "request", "p", None, None, "u1", location="home"),
    E(1000, "assign", "p", "a", "vm1", "u1", wait_s=0.0, request="r1"),
    E(1500, "request", "p", None, None, "u2", location="home"),
    E(1800, "launch", "p", "a", "vm3", reason="reserve", probe=False, cost_per_hour=0.5),
    E(1800, "assign", "p", "b", "vm2", "u2", wait_s=300.0, request="r2"),
    E(2000, "request", "p", None, None, "u3", location="far"),
    E(2160, "ready", "p", "a", "vm3", boot_s=360),
    E(3600, "abandon", "p", "a", "vm1", "u1", busy=False),
    E(4000, "release", "p", "b", "vm2", "u2"),
    E(4000, "terminate", "p", "b", "vm2", "u2", reason="release", state="allocated"),
    E(5400, "warn", "p", "a", "vm1", "u1", reason="idle", reclaim_at=6300),
    E(6000, "launch", "p", "a", "vm5", reason="reserve", probe=False, cost_per_hour=0.5),
    E(6300, "terminate", "p", "a", "vm1", "u1", reason="idle", state="allocated"),
]


def test_hand_log_headline():
    m = compute_metrics(LOG)
    assert (m["requests"], m["assigned"], m["unserved"]) == (3, 2, 1)
    # waits [0, 300]: linear percentiles 150, 285, 297
    assert m["wait_s"] == {"p50": 150.0, "p95": 285.0, "p99": 297.0, "max": 300.0, "mean": 150.0, "count": 2}
    # booting 360+720+360+360+1200 s, ready 640+1080+5040 s, allocated 2600+2200 s, abandoned 2700 s
    assert m["vm_hours"] == {"booting": 0.833333, "ready": 1.87778, "allocated": 1.33333, "abandoned": 0.75,
                             "total": 4.79444}
    # a: (6300+5400+1200) s x 0.5/h; b: 4000 s x 2/h (the header's rate); c: no rate -> 0
    assert m["cost"] == 4.01389
    assert m["reclaimed"] == 1
    assert m["terminations"] == {"idle": 1, "release": 1}
    assert (m["warnings"], m["failed_boots"], m["launch_failures"], m["api_errors"]) == (1, 1, 1, 1)
    assert (m["launches"], m["releases"], m["abandons"]) == (5, 1, 1)
    assert m["horizon_h"] == 2.0
    assert (m["start_s"], m["end_s"]) == (0.0, 7200.0)


def test_hand_log_per_cloud():
    pc = compute_metrics(LOG)["per_cloud"]
    assert sorted(pc) == ["a", "b", "c"]
    assert pc["a"] == {"launches": 3, "share": 0.6, "cost": 1.79167, "failed_boots": 0, "launch_failures": 0,
                       "api_errors": 0,
                       "vm_hours": {"booting": 0.533333, "ready": 1.57778, "allocated": 0.722222, "abandoned": 0.75,
                                    "total": 3.58333}}
    assert pc["b"] == {"launches": 1, "share": 0.2, "cost": 2.22222, "failed_boots": 0, "launch_failures": 1,
                       "api_errors": 1,
                       "vm_hours": {"booting": 0.2, "ready": 0.3, "allocated": 0.611111, "abandoned": 0.0,
                                    "total": 1.11111}}
    assert pc["c"]["launches"] == 1 and pc["c"]["share"] == 0.2 and pc["c"]["failed_boots"] == 1
    assert pc["c"]["vm_hours"]["booting"] == 0.1 and pc["c"]["cost"] == 0.0


def test_hand_log_per_pool():
    pp = compute_metrics(LOG)["per_pool"]
    assert pp == {"p": {"requests": 3, "assigned": 2, "unserved": 1, "launches": 5, "cost": 4.01389,
                        "wait_s": {"p50": 150.0, "p95": 285.0, "max": 300.0},
                        "vm_hours": {"booting": 0.833333, "ready": 1.87778, "allocated": 1.33333, "abandoned": 0.75,
                                     "total": 4.79444}}}


@pytest.mark.parametrize(("waits", "expected"), [
    ([0.0], {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0, "count": 1}),
    ([0.0, 0.0, 0.0, 10.0], {"p50": 0.0, "p95": 8.5, "p99": 9.7, "max": 10.0, "mean": 2.5, "count": 4}),
    ([1.0, 2.0, 3.0, 4.0, 5.0], {"p50": 3.0, "p95": 4.8, "p99": 4.96, "max": 5.0, "mean": 3.0, "count": 5}),
    ([30.0, 0.0, 120.0], {"p50": 30.0, "p95": 111.0, "p99": 118.2, "max": 120.0, "mean": 50.0, "count": 3}),
])
def test_wait_percentiles(waits, expected):
    log = []
    for i, w in enumerate(waits):
        log += [E(i, "request", "p", user=f"u{i}"), E(i + w, "assign", "p", "a", f"v{i}", f"u{i}", wait_s=w)]
    log.sort(key=lambda e: e.t)
    assert compute_metrics(log)["wait_s"] == expected


def test_no_requests_gives_null_waits():
    m = compute_metrics([RUN])
    assert m["requests"] == 0 and m["unserved"] == 0
    assert m["wait_s"] == {"p50": None, "p95": None, "p99": None, "max": None, "mean": None, "count": 0}
    assert m["vm_hours"]["total"] == 0.0 and m["cost"] == 0.0
    assert m["per_cloud"]["a"]["share"] is None  # no launches: no share to speak of
    assert m["per_pool"]["p"]["wait_s"] == {"p50": None, "p95": None, "max": None}


def test_empty_log():
    m = compute_metrics([])
    assert m["requests"] == 0 and m["horizon_h"] == 0.0 and m["per_cloud"] == {} and m["per_pool"] == {}
    json.loads(dumps_metrics(m))


def test_without_header_open_intervals_close_at_last_event():
    log = [E(100, "launch", "p", "a", "x"), E(400, "ready", "p", "a", "x"), E(1000, "request", "p", user="u")]
    m = compute_metrics(log)
    # booting 300 s, ready 600 s (closed at the last event), no rate anywhere -> cost 0
    assert m["vm_hours"] == {"booting": round_sig(300 / 3600), "ready": round_sig(600 / 3600), "allocated": 0.0,
                             "abandoned": 0.0, "total": 0.25}
    assert m["cost"] == 0.0 and m["horizon_h"] == 0.25 and m["unserved"] == 1


def test_vm_first_seen_mid_log_counts_from_its_first_event():
    # A live log that starts while vm "old" is allocated: counted from the assign, not before.
    log = [E(0, "run", clouds={"a": {"cost_per_hour": 3.6}}, end=3600),
           E(1800, "assign", "p", "a", "old", "u", wait_s=0), E(2700, "terminate", "p", "a", "old", reason="max_age")]
    m = compute_metrics(log)
    assert m["vm_hours"]["allocated"] == 0.25 and m["vm_hours"]["total"] == 0.25
    assert m["cost"] == 0.9  # 0.25 h x 3.6 from the header
    assert m["reclaimed"] == 1 and m["terminations"] == {"max_age": 1}


def test_reclaim_reasons_and_terminations_of_unknown_vms():
    log = [E(t, "terminate", "p", "a", f"v{t}", reason=r)
           for t, r in enumerate(["idle", "max_age", "recycle", "surplus", "drain", "idle", None])]
    m = compute_metrics(log)
    assert m["reclaimed"] == 3
    assert m["terminations"] == {"drain": 1, "idle": 2, "max_age": 1, "recycle": 1, "surplus": 1, "unspecified": 1}
    assert m["vm_hours"]["total"] == 0.0


def test_ending_events_stop_the_clock():
    log = [E(0, "run", end=10 * 3600),
           E(0, "launch", "p", "a", "g"), E(3600, "ready", "p", "a", "g"), E(7200, "gone", "p", "a", "g"),
           E(0, "launch", "p", "a", "f"), E(1800, "launch_failed", "p", "a", "f", error="refused"),
           E(8000, "terminate", "p", "a", "g", reason="late")]  # already gone: no more hours
    m = compute_metrics(sorted(log, key=lambda e: e.t))
    assert m["vm_hours"] == {"booting": 1.5, "ready": 1.0, "allocated": 0.0, "abandoned": 0.0, "total": 2.5}
    assert m["launch_failures"] == 1


def test_release_keeps_the_vm_allocated_until_it_is_terminated():
    log = [E(0, "run", end=3600), E(0, "assign", "p", "a", "v", wait_s=0), E(900, "release", "p", "a", "v"),
           E(1800, "terminate", "p", "a", "v", reason="release")]
    assert compute_metrics(log)["vm_hours"]["allocated"] == 0.5


def test_relaunched_id_starts_a_new_life():
    log = [E(0, "launch", "p", "a", "v", cost_per_hour=1.0), E(1800, "launch", "p", "b", "v", cost_per_hour=2.0),
           E(3600, "ready", "p", "b", "v"), E(7200, "terminate", "p", "b", "v")]
    m = compute_metrics(log)
    assert m["per_cloud"]["a"]["vm_hours"]["booting"] == 0.5
    assert m["per_cloud"]["b"]["vm_hours"] == {"booting": 0.5, "ready": 1.0, "allocated": 0.0, "abandoned": 0.0,
                                               "total": 1.5}
    assert m["cost"] == 0.5 + 3.0


def test_out_of_order_input_is_ordered_first():
    shuffled = LOG[::2] + LOG[1::2]
    assert compute_metrics(iter(shuffled)) == compute_metrics(LOG)


def test_deterministic_text():
    a = dumps_metrics(compute_metrics(LOG))
    b = dumps_metrics(compute_metrics(list(LOG)))
    assert a == b and a.endswith("\n")
    assert list(json.loads(a)) == sorted(json.loads(a))


@pytest.mark.parametrize(("event", "reason"), [
    (E(1, "assign", "p", "a", "v", wait_s="3"), "details.wait_s"),
    (E(1, "assign", "p", "a", "v", wait_s=-1), "details.wait_s"),
    (E(1, "launch", "p", "a", "v", cost_per_hour="cheap"), "details.cost_per_hour"),
    (E(1, "run", end="tomorrow"), "details.end"),
    (E(1, "run", clouds={"a": {"cost_per_hour": True}}), "details.clouds.a.cost_per_hour"),
    (E(1, "run", clouds=[1]), "details.clouds"),
    (E(1, "assign", "p", "a", "v", wait_s=2.5), None),
    (E(1, "launch", "p", "a", "v"), None),
])
def test_check_event(event, reason):
    got = check_event(event)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


def test_metrics_do_not_load_matplotlib():
    # The twin's compare loop imports reports for metrics only; plotting loads on first use.
    import subprocess
    import sys

    code = ("import sys, reports; reports.compute_metrics([]); assert 'matplotlib' not in sys.modules; "
            "assert callable(reports.write_outputs) and callable(reports.render_report)")
    subprocess.run([sys.executable, "-c", code], check=True)
