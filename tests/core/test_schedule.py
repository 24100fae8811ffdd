"""core.schedule: when the policy next needs a pass. Tables of VM in, due time out."""
from __future__ import annotations

import math

import pytest

from core.config import CloudConfig, Config, MaintenanceWindow, PolicyConfig, PoolConfig
from core.health import BACKOFF, CloudHealth
from core.policy import decide
from core.schedule import due_table, next_wakeup, vm_due_times, vm_wakeup
from core.snapshot import CloudObservation, HealthSample, Snapshot, Vm, VmState

POOL = PoolConfig("p", min_ready=0, max_total=10, idle_timeout_s=100.0, grace_s=10.0, max_age_s=1000.0,
                  max_ready_age_s=500.0)
CLOUD = CloudConfig("c", expected_boot_s=20.0)
CONFIG = Config(pools=(POOL,), clouds=(CLOUD,), policy=PolicyConfig(boot_timeout_s=300.0))


def vm(**kw) -> Vm:
    base = dict(id="v", pool="p", cloud="c", state=VmState.ALLOCATED, created_at=0.0, allocated_at=0.0)
    base.update(kw)
    return Vm(**base)


@pytest.mark.parametrize("v, now, expected", [
    # allocated, idle since its allocation: warned at allocation + idle_timeout
    (vm(), 0.0, 100.0),
    # input at 50 moves the warning to 150
    (vm(last_input_at=50.0), 60.0, 150.0),
    # warned at 120 (after the last activity): reclaim due at 130
    (vm(last_input_at=20.0, warned_at=120.0), 125.0, 130.0),
    # used after the warning: the warning is void, idle again from 140
    (vm(last_input_at=140.0, warned_at=120.0), 141.0, 240.0),
    # busy CPU: only the max-age rules remain (warn at 990, reclaim at 1000)
    (vm(cpu_percent=99.0), 500.0, 990.0),
    (vm(cpu_percent=99.0), 995.0, 1000.0),
    # ready at 10: recycled at 510, and (surplus allowed) trimmable at 610 > 510
    (vm(state=VmState.READY, allocated_at=None, ready_at=10.0), 11.0, 510.0),
    # booting since 0: judged slow just after 3 x 20 s, given up at 300
    (vm(state=VmState.BOOTING, allocated_at=None), 1.0, 60.0 + 1e-6),
    (vm(state=VmState.BOOTING, allocated_at=None), 61.0, 300.0),
    (vm(state=VmState.GONE), 0.0, math.inf),
])
def test_vm_wakeup(v, now, expected):
    assert vm_wakeup(v, POOL, CONFIG, now=now, after=now) == pytest.approx(expected)


def test_due_times_do_not_depend_on_now():
    v = vm(last_input_at=50.0)
    assert vm_due_times(v, POOL, CONFIG) == vm_due_times(v, POOL, CONFIG)
    assert vm_due_times(v, POOL, CONFIG) == (150.0, 990.0, 1000.0)


def test_surplus_due_only_for_pools_with_surplus():
    config = Config(pools=(PoolConfig("p", max_ready_age_s=5000.0),), clouds=(CLOUD,))
    ready = vm(state=VmState.READY, allocated_at=None, ready_at=0.0)
    snap = Snapshot(now=1.0, vms=(ready,))
    assert next_wakeup(snap, config, surplus_pools={"p"}) == pytest.approx(600.0)
    assert next_wakeup(snap, config, surplus_pools=set()) == pytest.approx(5000.0)


def test_after_catches_rules_that_fell_due_since_the_last_pass():
    snap = Snapshot(now=105.0, vms=(vm(),))
    assert next_wakeup(snap, CONFIG) == pytest.approx(990.0)  # 100 is past
    assert next_wakeup(snap, CONFIG, after=90.0) == pytest.approx(100.0)


def test_backoff_end_maintenance_and_bad_evidence_wake_the_policy():
    cloud = CloudConfig("c", expected_boot_s=20.0, maintenance=(MaintenanceWindow(5000.0, 6000.0),))
    config = Config(pools=(POOL,), clouds=(cloud,), policy=PolicyConfig(maintenance_lead_s=1000.0))
    snap = Snapshot(now=0.0, vms=())
    assert next_wakeup(snap, config) == 4000.0
    assert next_wakeup(snap, config, {"c": CloudHealth(status=BACKOFF, until=700.0)}) == 700.0
    good = CloudObservation("c", (HealthSample(10.0, "api", True),))
    bad = CloudObservation("c", (HealthSample(10.0, "api", False),))
    window = config.policy.health.window_s
    assert next_wakeup(Snapshot(now=20.0, vms=(), clouds=(good,)), config) == 4000.0
    assert next_wakeup(Snapshot(now=20.0, vms=(), clouds=(bad,)), config) == pytest.approx(10.0 + window, abs=1e-3)


def test_due_table_reuses_entries_of_unchanged_vms_only():
    a, b = vm(id="a"), vm(id="b")
    first = due_table(Snapshot(now=0.0, vms=(a, b)), CONFIG, {})
    b2 = vm(id="b", last_input_at=10.0)
    second = due_table(Snapshot(now=0.0, vms=(a, b2)), CONFIG, first)
    assert second["a"] is first["a"]
    assert second["b"][1] == (110.0, 990.0, 1000.0)


def test_a_pass_on_the_wakeup_acts_and_a_pass_before_it_does_not():
    """The contract shells rely on to skip passes: before the wakeup nothing is decided."""
    v = vm()
    snap = Snapshot(now=50.0, vms=(v,))
    wake = next_wakeup(snap, CONFIG)
    assert decide(Snapshot(now=wake - 1.0, vms=(v,)), CONFIG).actions == ()
    assert decide(Snapshot(now=wake, vms=(v,)), CONFIG).actions != ()
