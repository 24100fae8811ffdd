"""twin.predictive: the shell's hourly counts and what it tells the twin about its targets."""
from __future__ import annotations

from core.snapshot import Request, Snapshot
from twin.predictive import PredictiveSizer
from twin.scenario import validate

RAW = {
    "name": "sizer", "seed": 1, "duration": "3d",
    "clouds": [{"name": "c", "boot_median": "90s"}],
    "pools": [{"name": "p", "min_ready": 1, "demand": {"rate_per_hour": 2}}],
    "policy": {"predictive": {"enabled": True, "floor": 0}},
}


def _sizer() -> PredictiveSizer:
    sc = validate(RAW, source="s.yaml")
    return PredictiveSizer(sc, sc.extra["policy.predictive"])


def test_targets_do_not_follow_vms():
    # The twin needs no extra pass after a boot or a release for this sizer (see Twin._poke_if_waiting).
    assert PredictiveSizer.follows_vms is False


def test_each_request_counts_once_in_its_hour_and_quiet_hours_are_zeros():
    s = _sizer()
    reqs = (Request("r1", "p", "u", 10.0), Request("r2", "p", "u", 3 * 3600 + 5.0, "far"))
    s.observe(Snapshot(now=3 * 3600 + 5.0, vms=(), requests=reqs))
    s.observe(Snapshot(now=3 * 3600 + 6.0, vms=(), requests=reqs[1:]))  # still pending: not counted again
    h = s.histories(6 * 3600.0)["p"]
    assert h.start == 0.0 and h.counts == (1, 0, 0, 1, 0, 0)
    assert dict(h.locations) == {"home": 1, "far": 1}
