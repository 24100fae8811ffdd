"""Apply the policy's actions through the cloud adapters and the store, crash-safely.

Each action first writes its intent to the store, then calls the cloud, then records the answer; a
crash anywhere leaves a state the next reconcile repairs (see live.vmm). A launch refused by its cloud
(an error or a quota) fails over to the next cloud in `rank_clouds` order within the same pass.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from core import events as ev
from core.actions import Action, Assign, Drain, Launch, Terminate, Warn
from core.placement import rank_clouds
from core.policy import launchable_clouds
from core.ports import IMAGE_TAG, OWNER_TAG, POOL_TAG, VM_TAG, CloudError
from live.store.repo import BOOTING, GONE, RECLAIMING

if TYPE_CHECKING:
    from live.vmm import Vmm


def apply_actions(vmm: Vmm, actions: tuple[Action, ...], now: float) -> None:
    """Apply one pass's actions in the policy's order (reclaims, assignments, then launches)."""
    refused: set[str] = set()  # clouds that refused a launch this pass: later launches skip them
    headroom = vmm.headroom()
    for a in actions:
        if isinstance(a, Assign):
            assign(vmm, a, now)
        elif isinstance(a, Launch):
            launch(vmm, a, now, refused, headroom)
        elif isinstance(a, Terminate):
            terminate(vmm, a.vm, a.reason, now)
        elif isinstance(a, Warn):
            row = vmm.store.vm(a.vm)
            if row is not None and row.state == "allocated":
                vmm.store.update_vm(a.vm, warned_at=now)
                vmm.log.emit(now, ev.WARN, pool=row.pool, cloud=row.cloud, vm=a.vm, user=row.owner,
                             reason=a.reason, reclaim_at=a.reclaim_at)
        elif isinstance(a, Drain):
            row = vmm.store.vm(a.vm)
            if row is not None and row.state == "allocated":
                vmm.store.update_vm(a.vm, drained=True)
                vmm.log.emit(now, ev.DRAIN, pool=row.pool, cloud=row.cloud, vm=a.vm, user=row.owner, at=a.at)


def assign(vmm: Vmm, a: Assign, now: float) -> bool:
    req = vmm.store.request(a.request)
    if not vmm.store.allocate(vm_id=a.vm, request_id=a.request, now=now):
        return False
    row = vmm.store.vm(a.vm)
    vmm.log.emit(now, ev.ASSIGN, pool=a.pool, cloud=row.cloud, vm=a.vm, user=a.user,
                 request=a.request, wait_s=max(0.0, now - req.requested_at))
    return True


def launch(vmm: Vmm, a: Launch, now: float, refused: set[str], headroom: dict[str, int]) -> str | None:
    """Launch one VM of `a.pool`, trying `a.cloud` first and then the next clouds; the daaas id or None."""
    pool = vmm.config.pool(a.pool)
    if a.probe:  # a probe tests that one cloud: no failover
        order = [a.cloud]
    else:
        allowed = launchable_clouds(vmm.config, vmm.memory, now) - refused
        order = [a.cloud] + [c.name for c in rank_clouds(pool, vmm.config, allowed) if c.name != a.cloud]
    for cloud in order:
        if cloud in refused and not a.probe:
            continue
        if cloud != a.cloud and headroom.get(cloud, 0) <= 0:
            continue
        vm_id = vmm.store.intend_launch(pool=a.pool, cloud=cloud, now=now, reason=a.reason, probe=a.probe)
        tags = {OWNER_TAG: vmm.owner_id, POOL_TAG: a.pool, VM_TAG: vm_id, IMAGE_TAG: vmm.image_version}
        try:
            cloud_id = vmm.call(cloud, "launch", lambda c=cloud, t=tags: vmm.clouds[c].launch(pool=a.pool, tags=t))
        except CloudError as e:
            refused.add(cloud)
            vmm.store.move(vm_id, GONE, now=now, reason="launch_failed")
            vmm.log.emit(now, ev.LAUNCH_FAILED, pool=a.pool, cloud=cloud, vm=vm_id, error=str(e), quota=e.quota)
            continue
        vmm.store.move(vm_id, BOOTING, now=now, reason="launched", cloud_id=cloud_id)
        headroom[cloud] = headroom.get(cloud, 0) - 1
        cc = vmm.config.cloud(cloud)
        vmm.log.emit(now, ev.LAUNCH, pool=a.pool, cloud=cloud, vm=vm_id, reason=a.reason, probe=a.probe,
                     cost_per_hour=cc.cost_per_vm_hour, region=cc.region, failover_from=None if cloud == a.cloud
                     else a.cloud)
        return vm_id
    return None


def terminate(vmm: Vmm, vm_id: str, reason: str, now: float) -> None:
    """Reclaiming first (the intent), then the cloud call; the VM is gone once its cloud lists it no more."""
    row = vmm.store.vm(vm_id)
    if row is None or row.state == GONE:
        return
    was = row.state
    if was != RECLAIMING:
        if not vmm.store.move(vm_id, RECLAIMING, now=now, reason=reason):
            return
        if reason == "boot_timeout":
            vmm.boot_sample(row.cloud, now, ok=False, duration_s=now - row.created_at)
            vmm.log.emit(now, ev.BOOT_FAILED, pool=row.pool, cloud=row.cloud, vm=vm_id, reason=reason)
        vmm.log.emit(now, ev.TERMINATE, pool=row.pool, cloud=row.cloud, vm=vm_id, user=row.owner,
                     reason=reason, state=was)
    if row.cloud_id is None:
        return  # no cloud id yet: the reconcile deletes its tagged VM if one shows up
    try:
        vmm.call(row.cloud, "terminate", lambda: vmm.clouds[row.cloud].terminate(vm_id=row.cloud_id))
        vmm.store.update_vm(vm_id, terminate_sent_at=now)
    except CloudError as e:
        vmm.log.emit(now, ev.API_ERROR, cloud=row.cloud, vm=vm_id, call="terminate", error=str(e))
