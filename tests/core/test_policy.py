"""core.policy.decide: whole passes, snapshot in, exact actions out; and determinism."""
from __future__ import annotations

import pytest

from core.actions import Assign, Drain, Launch, Terminate, Warn
from core.config import CloudConfig, Config, HealthConfig, MaintenanceWindow, PolicyConfig, PoolConfig
from core.health import BACKOFF
from core.policy import decide, launchable_clouds
from core.snapshot import CloudObservation, HealthSample, Request, Snapshot, Vm, VmState

NOW = 1000.0
CONFIG = Config(
    pools=(PoolConfig("p", min_ready=2, max_total=10, idle_timeout_s=100.0, grace_s=10.0),
           PoolConfig("q", min_ready=1, max_total=10, clouds=("pubA",))),
    clouds=(CloudConfig("own", priority=0, quota=3),
            CloudConfig("pubA", priority=1, cost_per_vm_hour=1.0, quota=10),
            CloudConfig("pubB", priority=1, cost_per_vm_hour=1.0, quota=10,
                        maintenance=(MaintenanceWindow(NOW + 600.0, NOW + 7200.0),))),
    policy=PolicyConfig(maintenance_lead_s=900.0, health=HealthConfig(min_calls=3)),
)


def vm(i, pool, cloud, state, t=900.0, **kw):
    return Vm(id=i, pool=pool, cloud=cloud, state=state, created_at=t - 60.0,
              ready_at=t if state in (VmState.READY, VmState.ALLOCATED) else None,
              allocated_at=t if state is VmState.ALLOCATED else None, **kw)


def bad_api(cloud):
    return CloudObservation(cloud, tuple(HealthSample(at=NOW - 5, kind="api", ok=False) for _ in range(3)))


ROWS = [
    ("empty start: reserves on the preferred clouds, quota overflows to the next tier",
     Snapshot(NOW, ()),
     [Launch("p", "own"), Launch("p", "own"), Launch("q", "pubA")]),
    ("warn the idle, serve the request, replenish, fill q; own is full (quota) and pubB is going down",
     Snapshot(NOW, (vm("p1", "p", "own", VmState.READY), vm("p2", "p", "own", VmState.ALLOCATED, t=0.0),
                    vm("p3", "p", "own", VmState.BOOTING, t=990.0)),
              (Request("r1", "p", "u1", 950.0),)),
     [Warn("p2", "idle", NOW + 10.0), Assign("p1", "r1", "u1", "p"), Launch("p", "pubA"), Launch("q", "pubA")]),
    ("a failing own cloud: its ready and booting VMs stop counting, the reserve is rebuilt on pubA",
     Snapshot(NOW, (vm("p1", "p", "own", VmState.READY), vm("p2", "p", "own", VmState.BOOTING, t=990.0),
                    vm("q1", "q", "pubA", VmState.READY)), (), (bad_api("own"),)),
     [Launch("p", "pubA"), Launch("p", "pubA")]),
    ("maintenance lead on pubB: its user is told, its ready VM stops counting",
     Snapshot(NOW, (vm("p1", "p", "own", VmState.READY), vm("p2", "p", "pubB", VmState.READY),
                    vm("p3", "p", "pubB", VmState.ALLOCATED, last_input_at=NOW),
                    vm("q1", "q", "pubA", VmState.READY))),
     [Drain("p3", "pubB", NOW + 600.0), Launch("p", "own")]),
    ("max_total bounds the launches for a queue of requests",
     Snapshot(NOW, tuple(vm(f"a{i}", "p", "pubA", VmState.ALLOCATED, last_input_at=NOW) for i in range(8))
              + (vm("q1", "q", "pubA", VmState.READY),),
              tuple(Request(f"r{i}", "p", f"u{i}", 900.0 + i) for i in range(5))),
     [Launch("p", "own", reason="waiting"), Launch("p", "own", reason="waiting")]),
    ("all quotas full: nothing launched",
     Snapshot(NOW, tuple(vm(f"o{i}", "q", "own", VmState.ALLOCATED, last_input_at=NOW) for i in range(3))
              + tuple(vm(f"a{i}", "q", "pubA", VmState.ALLOCATED, last_input_at=NOW) for i in range(10))
              + tuple(vm(f"b{i}", "q", "pubB", VmState.ALLOCATED, last_input_at=NOW, drained=True)
                      for i in range(10))),
     []),
    ("a surplus of long-ready VMs is trimmed, oldest first",
     Snapshot(NOW, (vm("p1", "p", "own", VmState.READY, t=100.0), vm("p2", "p", "own", VmState.READY, t=200.0),
                    vm("p3", "p", "own", VmState.READY, t=300.0), vm("p4", "p", "own", VmState.READY, t=990.0),
                    vm("q1", "q", "pubA", VmState.READY))),
     [Terminate("p1", "surplus"), Terminate("p2", "surplus")]),  # p4 is young: never surplus yet
]


@pytest.mark.parametrize("case, snapshot, expected", ROWS, ids=[r[0][:40] for r in ROWS])
def test_decide(case, snapshot, expected):
    assert list(decide(snapshot, CONFIG).actions) == expected, case


def test_decide_is_deterministic():
    for _, snapshot, _ in ROWS:
        first = decide(snapshot, CONFIG)
        again = decide(snapshot, CONFIG)
        assert first == again
        # and so is the next pass from the memory it returned
        assert decide(snapshot, CONFIG, first.memory) == decide(snapshot, CONFIG, again.memory)


def test_targets_override_the_reserve_in_decide():
    d = decide(Snapshot(NOW, ()), CONFIG, targets={"p": 1, "q": 2})
    assert list(d.actions) == [Launch("p", "own"), Launch("q", "pubA"), Launch("q", "pubA")]
    assert [(n.pool, n.target) for n in d.needs] == [("p", 1), ("q", 2)]


def test_launchable_clouds_follows_health_and_maintenance():
    d = decide(Snapshot(NOW, (), (), (bad_api("own"),)), CONFIG)
    assert d.memory.clouds["own"].status == BACKOFF
    assert launchable_clouds(CONFIG, d.memory, NOW) == {"pubA"}  # own backed off, pubB going down
    assert launchable_clouds(CONFIG, d.memory, NOW + 7200.0) == {"pubA", "pubB"}


FAST = Config(pools=(PoolConfig("p", min_ready=2, max_total=10),),
              clouds=(CloudConfig("slow", priority=0, quota=10, expected_boot_s=300.0),
                      CloudConfig("fast", priority=1, cost_per_vm_hour=1.0, quota=10, expected_boot_s=60.0),
                      CloudConfig("full", priority=1, quota=0, expected_boot_s=10.0)))


@pytest.mark.parametrize("case, snapshot, expected", [
    ("no one waits: the reserve goes to the preferred cloud",
     Snapshot(NOW, ()), [Launch("p", "slow"), Launch("p", "slow")]),
    ("two users wait with nothing ready or booting: their VMs boot on the fastest cloud with quota left,"
     " the reserve on the preferred one",
     Snapshot(NOW, (), (Request("r1", "p", "u1", 990.0), Request("r2", "p", "u2", 995.0))),
     [Launch("p", "fast", reason="waiting"), Launch("p", "fast", reason="waiting"), Launch("p", "slow"),
      Launch("p", "slow")]),
    ("a user waits but a VM is already booting for them: no urgent launch",
     Snapshot(NOW, (vm("b1", "p", "slow", VmState.BOOTING, t=990.0),), (Request("r1", "p", "u1", 990.0),)),
     [Launch("p", "slow"), Launch("p", "slow")]),
], ids=lambda x: x if isinstance(x, str) else "")
def test_users_waiting_get_the_fastest_boot(case, snapshot, expected):
    assert list(decide(snapshot, FAST).actions) == expected, case
