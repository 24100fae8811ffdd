"""A census of a snapshot's VMs: the counts that sizing, quota headroom, health and allocation read,
taken in one walk.

A pass used to walk every VM once for each of them. The census keeps only what does not depend on
the pass's own decisions (which VMs it terminates or assigns, which clouds it discounts): those are
small sets, applied to the counts afterwards by the functions that read them.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.snapshot import LIVE_STATES, Snapshot, Vm, VmState


@dataclass(frozen=True)
class Census:
    """Counts of one snapshot's VMs by pool and cloud."""

    live: dict[str, int]  # pool -> VMs requested, booting, ready or allocated
    unallocated: dict[str, dict[str, int]]  # pool -> cloud -> VMs requested, booting or ready
    ready: dict[str, list[Vm]]  # pool -> its ready VMs, in snapshot order
    cloud_live: dict[str, int]  # cloud -> VMs requested, booting, ready or allocated (what counts on quota)
    booting_since: dict[str, list[float]]  # cloud -> created_at of each VM requested or booting


def take_census(snapshot: Snapshot) -> Census:
    """One walk over the snapshot's VMs (the hot loop of a pass: identity tests, most common state first)."""
    live: dict[str, int] = {}
    unallocated: dict[str, dict[str, int]] = {}
    ready: dict[str, list[Vm]] = {}
    cloud_live: dict[str, int] = {}
    booting_since: dict[str, list[float]] = {}
    allocated, ready_state = VmState.ALLOCATED, VmState.READY
    booting, requested = VmState.BOOTING, VmState.REQUESTED
    for vm in snapshot.vms:
        state = vm.state
        pool, cloud = vm.pool, vm.cloud
        if state is allocated:
            pass
        elif state is ready_state:
            ready.setdefault(pool, []).append(vm)
        elif state is booting or state is requested:
            booting_since.setdefault(cloud, []).append(vm.created_at)
        else:
            continue  # reclaiming or gone: counted nowhere
        live[pool] = live.get(pool, 0) + 1
        cloud_live[cloud] = cloud_live.get(cloud, 0) + 1
        if state is not allocated:
            per_cloud = unallocated.get(pool)
            if per_cloud is None:
                per_cloud = unallocated[pool] = {}
            per_cloud[cloud] = per_cloud.get(cloud, 0) + 1
    return Census(live, unallocated, ready, cloud_live, booting_since)


def removed_vms(snapshot: Snapshot, removed: set[str]) -> list[Vm]:
    """The VMs of `removed` (ids terminated in this pass) that are live: few, and on few passes."""
    if not removed:
        return []
    return [vm for vm in snapshot.vms if vm.id in removed and vm.state in LIVE_STATES]
