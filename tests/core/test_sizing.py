"""core.sizing: reserve sizing per pool. Rows of VMs in, (target, available, launch, surplus) out."""
from __future__ import annotations

import pytest

from core.config import CloudConfig, Config, PoolConfig
from core.sizing import size_pools
from core.snapshot import Request, Snapshot, Vm, VmState

NOW = 10_000.0
CONFIG = Config(pools=(PoolConfig("p", min_ready=2, max_total=5),), clouds=(CloudConfig("a"), CloudConfig("b")))


def vm(i, state=VmState.READY, cloud="a", ready_at=NOW - 1000.0):
    return Vm(id=f"v{i}", pool="p", cloud=cloud, state=state, created_at=ready_at - 100.0,
              ready_at=ready_at if state in (VmState.READY, VmState.ALLOCATED) else None)


def req(i):
    return Request(id=f"r{i}", pool="p", user=f"u{i}", requested_at=NOW - i)


def need(vms=(), requests=(), removed=(), assigned=(), served=(), discounted=(), targets=None, config=CONFIG):
    snap = Snapshot(now=NOW, vms=tuple(vms), requests=tuple(requests))
    (n,) = size_pools(snap, config, removed=set(removed), assigned=set(assigned), served=set(served),
                      discounted_clouds=set(discounted), targets=targets)
    return n.target, n.available, n.launch, n.surplus


@pytest.mark.parametrize("case, kw, expected", [
    ("empty pool: fill the reserve", {}, (2, 0, 2, ())),
    ("one ready: one more", dict(vms=[vm(1)]), (2, 1, 1, ())),
    ("reserve full", dict(vms=[vm(1), vm(2)]), (2, 2, 0, ())),
    ("a booting VM counts: no overshoot", dict(vms=[vm(1), vm(2, VmState.BOOTING)]), (2, 2, 0, ())),
    ("a requested VM counts too", dict(vms=[vm(1, VmState.REQUESTED), vm(2, VmState.BOOTING)]), (2, 2, 0, ())),
    ("allocated VMs are not the reserve", dict(vms=[vm(1, VmState.ALLOCATED)]), (2, 0, 2, ())),
    ("replenish after an allocation this pass", dict(vms=[vm(1), vm(2)], assigned=["v1"]), (2, 1, 1, ())),
    ("a VM terminated this pass does not count", dict(vms=[vm(1), vm(2)], removed=["v2"]), (2, 1, 1, ())),
    ("gone and reclaiming VMs do not count",
     dict(vms=[vm(1, VmState.GONE), vm(2, VmState.RECLAIMING)]), (2, 0, 2, ())),
    ("waiting requests add to the target", dict(requests=[req(1), req(2)]), (4, 0, 4, ())),
    ("a request served this pass does not", dict(requests=[req(1), req(2)], served=["r1"]), (3, 0, 3, ())),
    ("never above max_total (allocated count)",
     dict(vms=[vm(i, VmState.ALLOCATED) for i in range(4)]), (2, 0, 1, ())),
    ("max_total reached: nothing", dict(vms=[vm(i, VmState.ALLOCATED) for i in range(5)]), (2, 0, 0, ())),
    ("max_total bounds waiting requests too", dict(requests=[req(i) for i in range(9)]), (11, 0, 5, ())),
    ("a terminated VM frees room under max_total",
     dict(vms=[vm(i, VmState.ALLOCATED) for i in range(5)], removed=["v0"]), (2, 0, 1, ())),
    ("VMs on a discounted cloud are not the reserve: rebuilt elsewhere",
     dict(vms=[vm(1), vm(2)], discounted=["a"]), (2, 0, 2, ())),
    ("booting VMs on a discounted cloud do not count either",
     dict(vms=[vm(1, VmState.BOOTING), vm(2, VmState.BOOTING)], discounted=["a"]), (2, 0, 2, ())),
    ("but they still count towards max_total",
     dict(vms=[vm(i, VmState.BOOTING) for i in range(4)], discounted=["a"]), (2, 0, 1, ())),
    ("other clouds still count", dict(vms=[vm(1), vm(2, cloud="b")], discounted=["a"]), (2, 1, 1, ())),
    ("surplus: oldest ready beyond the target",
     dict(vms=[vm(1, ready_at=NOW - 900), vm(2, ready_at=NOW - 5000), vm(3, ready_at=NOW - 700),
               vm(4, ready_at=NOW - 3000)]), (2, 4, 0, ("v2", "v4"))),
    ("surplus spares VMs ready only briefly",
     dict(vms=[vm(1, ready_at=NOW - 10), vm(2, ready_at=NOW - 20), vm(3, ready_at=NOW - 5000)]),
     (2, 3, 0, ("v3",))),
    ("booting VMs are never surplus", dict(vms=[vm(i, VmState.BOOTING) for i in range(4)]), (2, 4, 0, ())),
    ("targets override min_ready", dict(targets={"p": 4}), (4, 0, 4, ())),
    ("targets may lower the reserve", dict(vms=[vm(1), vm(2)], targets={"p": 0}), (0, 2, 0, ("v1", "v2"))),
    ("a pool missing from targets keeps min_ready", dict(targets={"other": 9}), (2, 0, 2, ())),
])
def test_size_pools(case, kw, expected):
    assert need(**kw) == expected, case


def test_every_pool_gets_a_need_and_foreign_vms_are_ignored():
    config = Config(pools=(PoolConfig("p", min_ready=1), PoolConfig("q", min_ready=3)), clouds=(CloudConfig("a"),))
    stray = Vm(id="x", pool="unknown", cloud="a", state=VmState.READY, created_at=0.0, ready_at=0.0)
    snap = Snapshot(now=NOW, vms=(stray,))
    needs = size_pools(snap, config, removed=set(), assigned=set(), served=set(), discounted_clouds=set())
    assert [(n.pool, n.launch) for n in needs] == [("p", 1), ("q", 3)]
