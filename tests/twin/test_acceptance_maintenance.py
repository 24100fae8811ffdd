"""Acceptance (issue 2), planned-maintenance.yaml: nothing is launched on the cloud inside its window,
reserves elsewhere have grown before it starts, its idle VMs go and its users are drained."""
from __future__ import annotations

import pytest

from core import events as ev
from twin.run import SCENARIO_DIR, simulate
from twin.scenario import load_scenario

DAY = 86400.0


@pytest.fixture(scope="module")
def run():
    sc = load_scenario(SCENARIO_DIR / "planned-maintenance.yaml")
    (cloud,) = [c for c in sc.config.clouds if c.maintenance]
    (window,) = cloud.maintenance
    return sc, simulate(sc), cloud.name, window


def _states_at(events, t: float) -> dict[str, tuple[str, str, str]]:
    """Each live VM at time `t` (events strictly before it): vm -> (pool, cloud, state)."""
    vms: dict[str, tuple[str, str, str]] = {}
    for e in events:
        if e.t >= t:
            break
        if e.kind == ev.LAUNCH:
            vms[e.vm] = (e.pool, e.cloud, "booting")
        elif e.kind == ev.READY and e.vm in vms:
            vms[e.vm] = (e.pool, e.cloud, "ready")
        elif e.kind == ev.ASSIGN and e.vm in vms:
            vms[e.vm] = (e.pool, e.cloud, "allocated")
        elif e.kind in (ev.TERMINATE, ev.GONE, ev.BOOT_FAILED):
            vms.pop(e.vm, None)
    return vms


def _reserve_elsewhere(events, t: float, cloud: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for pool, c, state in _states_at(events, t).values():
        if c != cloud and state in ("ready", "booting"):
            out[pool] = out.get(pool, 0) + 1
    return out


def test_nothing_is_launched_on_the_cloud_inside_its_window(run):
    sc, events, cloud, w = run
    assert [e for e in events if e.kind == ev.LAUNCH and e.cloud == cloud and w.start <= e.t < w.end] == []
    # ...and it is used again after it (the window is not a permanent ban).
    assert any(e.kind == ev.LAUNCH and e.cloud == cloud and e.t >= w.end for e in events)
    marks = [(e.kind, e.t) for e in events if e.kind in (ev.MAINTENANCE_START, ev.MAINTENANCE_END)]
    assert marks == [(ev.MAINTENANCE_START, w.start), (ev.MAINTENANCE_END, w.end)]


def test_reserves_elsewhere_have_grown_before_the_window_starts(run):
    sc, events, cloud, w = run
    lead = sc.config.policy.maintenance_lead_s
    before = _reserve_elsewhere(events, w.start, cloud)
    before_lead = _reserve_elsewhere(events, w.start - lead, cloud)
    # The day before, sampled each hour (one instant could fall on a short failover of the reserve).
    hourly = [_reserve_elsewhere(events, w.start - DAY + h * 3600.0, cloud) for h in range(24)]
    for pool in sc.config.pools:
        n = before.get(pool.name, 0)
        assert n >= pool.min_ready, (pool.name, before)
        assert n > before_lead.get(pool.name, 0), (pool.name, before, before_lead)
        usual = sorted(s.get(pool.name, 0) for s in hourly)[12]
        assert n > usual, (pool.name, before, hourly)
    # Grown within the lead, not kept there all along.
    grown = [e for e in events if e.kind == ev.LAUNCH and e.cloud != cloud and w.start - lead <= e.t < w.start]
    assert grown


def test_idle_vms_there_are_terminated_and_users_drained(run):
    sc, events, cloud, w = run
    period = sc.config.policy.period_s
    at_start = _states_at(events, w.start)
    idle = [vm for vm, (_, c, s) in at_start.items() if c == cloud and s in ("ready", "booting")]
    busy = [vm for vm, (_, c, s) in at_start.items() if c == cloud and s == "allocated"]
    assert idle and busy  # the scenario exercises both
    terms = {e.vm: e for e in events if e.kind == ev.TERMINATE}
    for vm in idle:
        assert terms[vm].details["reason"] == "maintenance" and w.start <= terms[vm].t <= w.start + period
    drains = {e.vm: e for e in events if e.kind == ev.DRAIN}
    for vm in busy:
        assert vm in drains and drains[vm].t <= w.start and drains[vm].details["at"] == w.start
