"""timeline(): per pool VM counts as a step function, and cloud intervals, from events."""
from __future__ import annotations

import numpy as np
import pytest

from core.events import Event
from reports.timeline import Interval, timeline


def E(t, kind, pool=None, cloud=None, vm=None, user=None, **details):  # noqa: N802
    return Event(t=float(t), kind=kind, pool=pool, cloud=cloud, vm=vm, user=user, details=details)


LOG = [
    E(0, "run", start=0, end=1000, pools=["p", "q"]),
    E(0, "launch", "p", "a", "v1"),
    E(0, "launch", "p", "a", "v2"),
    E(100, "ready", "p", "a", "v1"),
    E(100, "cloud_down", None, "b", mode="down"),
    E(150, "cloud_status", None, "b", status="backoff", verdict="failing", backoff_s=300),
    E(200, "ready", "p", "a", "v2"),
    E(300, "assign", "p", "a", "v1", "u", wait_s=0),
    E(300, "cloud_up", None, "b"),
    E(400, "maintenance_start", None, "a", end=600),
    E(450, "cloud_status", None, "b", status="probing", verdict="failing", backoff_s=300),
    E(500, "abandon", "p", "a", "v1", "u"),
    E(600, "maintenance_end", None, "a"),
    E(700, "terminate", "p", "a", "v1", reason="idle"),
    E(800, "cloud_down", None, "a", mode="slow"),  # still down at the end
    E(900, "maintenance_start", None, "b", end=5000),  # still on at the end
    E(950, "cloud_status", None, "a", status="backoff", verdict="slow", backoff_s=600),
]


def test_exact_change_points():
    tl = timeline(LOG)
    assert sorted(tl.pools) == ["p", "q"]
    s = tl.pools["p"]
    assert s.t.tolist() == [0, 0, 100, 200, 300, 500, 700, 1000]
    assert s.booting.tolist() == [0, 2, 1, 0, 0, 0, 0, 0]
    assert s.ready.tolist() == [0, 0, 1, 2, 1, 1, 1, 1]
    assert s.allocated.tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    assert s.abandoned.tolist() == [0, 0, 0, 0, 0, 1, 0, 0]
    q = tl.pools["q"]  # in the header, never used
    assert q.t.tolist() == [0, 1000] and q.ready.tolist() == [0, 0]


def test_sampled():
    s = timeline(LOG, step_s=250).pools["p"]
    assert s.t.tolist() == [0, 250, 500, 750, 1000]
    assert s.booting.tolist() == [2, 0, 0, 0, 0]
    assert s.ready.tolist() == [0, 2, 1, 1, 1]
    assert s.allocated.tolist() == [0, 0, 0, 0, 0]
    assert s.abandoned.tolist() == [0, 0, 1, 0, 0]
    assert s.ready.dtype.kind == "i"


def test_intervals_and_open_ones_close_at_the_end():
    tl = timeline(LOG)
    assert tl.outages == {"b": [Interval(100, 300, "down")], "a": [Interval(800, 1000, "slow")]}
    assert tl.maintenance == {"a": [Interval(400, 600, "maintenance")], "b": [Interval(900, 1000, "maintenance")]}
    assert tl.backoff == {"b": [Interval(150, 450, "failing")], "a": [Interval(950, 1000, "slow")]}
    assert [c[1:3] for c in tl.status_changes] == [("b", "backoff"), ("b", "probing"), ("a", "backoff")]
    assert (tl.start, tl.end, tl.time_base) == (0, 1000, "sim")


def test_maintenance_without_end_event_closes_at_its_planned_end():
    tl = timeline([E(0, "run", end=1000), E(100, "maintenance_start", None, "a", end=300)])
    assert tl.maintenance == {"a": [Interval(100, 300, "maintenance")]}


def test_empty_and_bad_step():
    tl = timeline([])
    assert tl.pools == {} and tl.outages == {}
    with pytest.raises(ValueError, match="step_s"):
        timeline(LOG, step_s=0)


def test_counts_never_negative_on_a_random_log():
    rng = np.random.default_rng(7)
    kinds = ["launch", "ready", "assign", "abandon", "terminate", "gone", "release"]
    log = [E(float(t), str(rng.choice(kinds)), "p", "a", f"v{rng.integers(20)}") for t in sorted(rng.random(500) * 1e4)]
    s = timeline(log).pools["p"]
    for series in (s.booting, s.ready, s.allocated, s.abandoned):
        assert series.min() >= 0
    live = s.booting + s.ready + s.allocated + s.abandoned
    assert live.max() <= 20


def test_max_per_step_keeps_short_peaks():
    # Three VMs booting for 10 s between samples: sampling misses them, the max does not.
    log = [E(0, "run", end=300)] + [E(100 + i, "launch", "p", "a", f"v{i}") for i in range(3)] + \
          [E(110, "boot_failed", "p", "a", f"v{i}") for i in range(3)] + \
          [E(200, "launch", "p", "a", "w"), E(250, "ready", "p", "a", "w")]
    sampled = timeline(log, step_s=100).pools["p"]
    peaks = timeline(log, step_s=100, agg="max").pools["p"]
    assert sampled.t.tolist() == peaks.t.tolist() == [0, 100, 200, 300]
    assert sampled.booting.tolist() == [0, 1, 1, 0]
    assert peaks.booting.tolist() == [0, 3, 1, 0]
    assert peaks.ready.tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="agg"):
        timeline(log, step_s=100, agg="mean")


def test_max_matches_brute_force_on_a_random_log():
    rng = np.random.default_rng(11)
    kinds = ["launch", "ready", "assign", "terminate"]
    log = [E(float(t), str(rng.choice(kinds)), "p", "a", f"v{rng.integers(15)}")
           for t in sorted(rng.integers(0, 5000, 400))]
    exact = timeline(log).pools["p"]
    peaks = timeline(log, step_s=250, agg="max").pools["p"]
    for k, t0 in enumerate(peaks.t):
        # the exact step function's values in [t0, t0 + 250)
        i = np.searchsorted(exact.t, t0, side="right") - 1
        j = np.searchsorted(exact.t, t0 + 250, side="left")
        for state in ("booting", "ready", "allocated"):
            values = getattr(exact, state)[max(i, 0):max(j, i + 1)]
            assert getattr(peaks, state)[k] == values.max(), (k, state)
