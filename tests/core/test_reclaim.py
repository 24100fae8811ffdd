"""core.reclaim and core.activity: warn, reclaim, cap, recycle, give up boots."""
from __future__ import annotations

import pytest

from core.actions import Terminate, Warn
from core.activity import is_busy, last_activity
from core.config import CloudConfig, Config, PolicyConfig, PoolConfig
from core.reclaim import reclaim_verdict, select_reclaims
from core.snapshot import Snapshot, Vm, VmState

POOL = PoolConfig("p", idle_timeout_s=100.0, grace_s=10.0, max_age_s=1000.0, max_ready_age_s=500.0)
POLICY = PolicyConfig(busy_cpu_percent=20.0, busy_io_bytes_per_s=1e6, boot_timeout_s=300.0)
CONFIG = Config(pools=(POOL,), clouds=(CloudConfig("c"),), policy=POLICY)


def alloc(**kw):
    base = dict(id="v", pool="p", cloud="c", state=VmState.ALLOCATED, created_at=0.0, ready_at=0.0,
                allocated_at=0.0, owner="u")
    base.update(kw)
    return Vm(**base)


@pytest.mark.parametrize("cpu, io, busy", [
    (0.0, 0.0, False), (19.9, 0.0, False), (20.0, 0.0, True), (0.0, 1e6, True), (0.0, 999_999.0, False),
])
def test_is_busy(cpu, io, busy):
    assert is_busy(cpu, io, POLICY) is busy


@pytest.mark.parametrize("v, now, expected", [
    (alloc(), 50.0, 0.0),  # the allocation itself
    (alloc(last_input_at=30.0, last_busy_at=40.0), 50.0, 40.0),
    (alloc(last_input_at=45.0, last_busy_at=40.0), 50.0, 45.0),
    (alloc(cpu_percent=90.0), 50.0, 50.0),  # busy right now
    (alloc(allocated_at=None, created_at=5.0), 50.0, 5.0),
])
def test_last_activity(v, now, expected):
    assert last_activity(v, now, POLICY) == expected


@pytest.mark.parametrize("case, v, now, expected", [
    ("recently allocated", alloc(), 50.0, None),
    ("idle beyond the timeout: warn", alloc(), 100.0, Warn("v", "idle", 110.0)),
    ("warned, within grace", alloc(warned_at=100.0), 105.0, None),
    ("warned, still idle after grace: terminate", alloc(warned_at=100.0), 110.0, Terminate("v", "idle")),
    ("used after the warning: the warning is void", alloc(warned_at=100.0, last_input_at=105.0), 110.0, None),
    ("voided warning, idle again: warned afresh", alloc(warned_at=100.0, last_input_at=105.0), 205.0,
     Warn("v", "idle", 215.0)),
    ("CPU busy now: a long computation is not culled", alloc(cpu_percent=95.0), 900.0, None),
    ("I/O busy now", alloc(io_bytes_per_s=5e6), 900.0, None),
    ("busy recently", alloc(last_busy_at=850.0), 900.0, None),
    ("busy even after a warning voids it", alloc(warned_at=100.0, cpu_percent=95.0), 500.0, None),
    ("max_age approaching: warned grace_s before", alloc(last_input_at=985.0), 990.0, Warn("v", "max_age", 1000.0)),
    ("max_age warning despite an earlier, voided idle warning",
     alloc(warned_at=100.0, last_input_at=985.0), 990.0, Warn("v", "max_age", 1000.0)),
    ("max_age warned once only", alloc(warned_at=990.0, last_input_at=993.0), 995.0, None),
    ("max_age reached: terminated, busy or not", alloc(cpu_percent=95.0, warned_at=990.0), 1000.0,
     Terminate("v", "max_age")),
    ("max_age counts from the allocation", alloc(created_at=0.0, allocated_at=500.0, cpu_percent=95.0), 1200.0,
     None),
])
def test_reclaim_verdict(case, v, now, expected):
    assert reclaim_verdict(v, POOL, POLICY, now) == expected, case


def other(i, state, created_at=0.0, ready_at=None, pool="p"):
    return Vm(id=f"o{i}", pool=pool, cloud="c", state=state, created_at=created_at, ready_at=ready_at)


@pytest.mark.parametrize("case, vms, now, expected", [
    ("ready VMs older than max_ready_age are recycled",
     [other(1, VmState.READY, 0.0, 0.0), other(2, VmState.READY, 0.0, 100.0)], 500.0, [Terminate("o1", "recycle")]),
    ("boots past boot_timeout are given up",
     [other(1, VmState.BOOTING, 100.0), other(2, VmState.REQUESTED, 0.0), other(3, VmState.BOOTING, 250.0)], 400.0,
     [Terminate("o1", "boot_timeout"), Terminate("o2", "boot_timeout")]),
    ("VMs of an unknown pool are left alone", [other(1, VmState.READY, 0.0, 0.0, pool="x")], 5000.0, []),
    ("reclaiming and gone VMs are left alone",
     [other(1, VmState.RECLAIMING, 0.0, 0.0), other(2, VmState.GONE, 0.0, 0.0)], 5000.0, []),
    ("allocated ones go through the verdict", [alloc()], 100.0, [Warn("v", "idle", 110.0)]),
])
def test_select_reclaims(case, vms, now, expected):
    assert select_reclaims(Snapshot(now=now, vms=tuple(vms)), CONFIG) == expected, case


def test_select_reclaims_only_the_due():
    snap = Snapshot(now=5000.0, vms=(other(1, VmState.READY, 0.0, 0.0), other(2, VmState.READY, 0.0, 0.0)))
    assert select_reclaims(snap, CONFIG, only={"o2"}) == [Terminate("o2", "recycle")]
    assert select_reclaims(snap, CONFIG, only=set()) == []
