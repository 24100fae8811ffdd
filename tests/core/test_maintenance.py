"""core.maintenance: planned downtime before, during and after a cloud's window."""
from __future__ import annotations

import pytest

from core.actions import Drain, Launch, Terminate
from core.config import CloudConfig, Config, MaintenanceWindow, PolicyConfig, PoolConfig
from core.maintenance import clouds_going_down, current_window_end, plan_maintenance
from core.policy import decide
from core.snapshot import Snapshot, Vm, VmState

W = MaintenanceWindow(10_000.0, 20_000.0)
CONFIG = Config(pools=(PoolConfig("p", min_ready=2, max_total=20),),
                clouds=(CloudConfig("a", priority=0, maintenance=(W,)), CloudConfig("b", priority=1)),
                policy=PolicyConfig(maintenance_lead_s=3600.0))


@pytest.mark.parametrize("now, going_down, window_end", [
    (6000.0, {}, None),  # before the lead
    (6400.0, {"a": 10_000.0}, None),  # the lead starts exactly at start - lead
    (9999.0, {"a": 10_000.0}, None),
    (10_000.0, {"a": 10_000.0}, 20_000.0),  # inside
    (19_999.0, {"a": 10_000.0}, 20_000.0),
    (20_000.0, {}, None),  # after: used again
])
def test_clouds_going_down(now, going_down, window_end):
    assert clouds_going_down(CONFIG, now) == going_down
    assert current_window_end(CONFIG.cloud("a"), now) == window_end


def vm(i, state, cloud="a", drained=False, created_at=0.0):
    return Vm(id=f"v{i}", pool="p", cloud=cloud, state=state, created_at=created_at,
              ready_at=0.0 if state in (VmState.READY, VmState.ALLOCATED) else None,
              allocated_at=0.0 if state is VmState.ALLOCATED else None, owner="u" if state is VmState.ALLOCATED
              else None, drained=drained)


@pytest.mark.parametrize("case, now, vms, expected", [
    ("before the lead: nothing", 6000.0, [vm(1, VmState.ALLOCATED)], []),
    ("in the lead: allocated VMs get one Drain", 8000.0,
     [vm(1, VmState.ALLOCATED), vm(2, VmState.ALLOCATED, drained=True), vm(3, VmState.READY)],
     [Drain("v1", "a", 10_000.0)]),
    ("in the lead: ready VMs stay (no Terminate before the start)", 9000.0, [vm(3, VmState.READY)], []),
    ("inside: idle ready, booting, requested VMs are terminated", 12_000.0,
     [vm(1, VmState.READY), vm(2, VmState.BOOTING), vm(3, VmState.REQUESTED), vm(4, VmState.ALLOCATED, drained=True),
      vm(5, VmState.RECLAIMING)],
     [Terminate("v1", "maintenance"), Terminate("v2", "maintenance"), Terminate("v3", "maintenance")]),
    ("other clouds untouched", 12_000.0, [vm(1, VmState.READY, "b"), vm(2, VmState.ALLOCATED, "b")], []),
    ("after: nothing", 20_000.0, [vm(1, VmState.READY), vm(2, VmState.ALLOCATED)], []),
])
def test_plan_maintenance(case, now, vms, expected):
    snap = Snapshot(now=now, vms=tuple(vms))
    assert plan_maintenance(snap, CONFIG, clouds_going_down(CONFIG, now)) == expected, case


@pytest.mark.parametrize("case, now, vms, expected", [
    ("well before: the reserve is on a, nothing to do", 5000.0, [vm(1, VmState.READY), vm(2, VmState.READY)], []),
    ("in the lead: a's ready VMs stop counting, the reserve grows on b", 7000.0,
     [vm(1, VmState.READY), vm(2, VmState.READY)], [Launch("p", "b"), Launch("p", "b")]),
    ("inside: launches go to b only, a's idle VMs are terminated", 12_000.0,
     [vm(1, VmState.READY), vm(2, VmState.BOOTING, created_at=11_950.0)],
     [Terminate("v1", "maintenance"), Terminate("v2", "maintenance"), Launch("p", "b"), Launch("p", "b")]),
    ("after: a is used again", 20_000.0, [], [Launch("p", "a"), Launch("p", "a")]),
])
def test_decide_around_a_window(case, now, vms, expected):
    assert list(decide(Snapshot(now=now, vms=tuple(vms)), CONFIG).actions) == expected, case
