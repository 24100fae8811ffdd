"""core.census: one walk over a snapshot's VMs gives the counts a pass reads."""
from __future__ import annotations

from core.census import removed_vms, take_census
from core.snapshot import Snapshot, Vm, VmState


def vm(i, state, pool="p", cloud="a"):
    return Vm(id=f"v{i}", pool=pool, cloud=cloud, state=state, created_at=100.0 + i,
              ready_at=200.0 if state in (VmState.READY, VmState.ALLOCATED) else None)


SNAP = Snapshot(now=1000.0, vms=(
    vm(1, VmState.READY), vm(2, VmState.BOOTING, cloud="b"), vm(3, VmState.ALLOCATED), vm(4, VmState.REQUESTED),
    vm(5, VmState.RECLAIMING), vm(6, VmState.GONE), vm(7, VmState.READY, pool="q", cloud="b"),
    vm(8, VmState.ALLOCATED, pool="q", cloud="b")))


def test_the_census_counts_live_vms_by_pool_and_cloud():
    c = take_census(SNAP)
    assert c.live == {"p": 4, "q": 2}  # reclaiming and gone VMs are not live
    assert c.unallocated == {"p": {"a": 2, "b": 1}, "q": {"b": 1}}
    assert {p: [v.id for v in vms] for p, vms in c.ready.items()} == {"p": ["v1"], "q": ["v7"]}
    assert c.cloud_live == {"a": 3, "b": 3}
    assert c.booting_since == {"b": [102.0], "a": [104.0]}


def test_removed_vms_are_the_live_ones_among_the_ids():
    assert [v.id for v in removed_vms(SNAP, {"v1", "v5", "v8", "nope"})] == ["v1", "v8"]
    assert removed_vms(SNAP, set()) == []
