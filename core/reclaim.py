"""Reclaiming VMs: warn the owner of an inactive VM, reclaim it after a grace period; cap a VM's
life; recycle ready VMs that waited too long; give up boots that never finish.

The arbiter (`reclaim_verdict`) is a pure function of one VM, like jupyterhub-idle-culler's.
"""
from __future__ import annotations

from collections.abc import Collection

from core.actions import Terminate, Warn
from core.activity import last_activity
from core.config import Config, PolicyConfig, PoolConfig
from core.snapshot import Snapshot, Vm, VmState


def reclaim_verdict(vm: Vm, pool: PoolConfig, policy: PolicyConfig, now: float
                    ) -> Warn | Terminate | None:
    """For an allocated VM: warn, reclaim, or leave it be."""
    life = now - (vm.allocated_at if vm.allocated_at is not None else vm.created_at)
    if life >= pool.max_age_s:
        return Terminate(vm=vm.id, reason="max_age")
    active = last_activity(vm, now, policy)
    # A warning is void once the VM has been used since it was given.
    warned_at = vm.warned_at
    if now - active >= pool.idle_timeout_s:
        if warned_at is None or not warned_at >= active:  # "not >=": exactly the old test
            return Warn(vm=vm.id, reason="idle", reclaim_at=now + pool.grace_s)
        if now >= warned_at + pool.grace_s:
            return Terminate(vm=vm.id, reason="idle")
        return None
    # An idle warning voided by later use must not stand in for the max_age one: only a warning
    # given within grace_s of the end counts as the max_age warning.
    warn_from = now - life + pool.max_age_s - pool.grace_s
    if life >= pool.max_age_s - pool.grace_s and (vm.warned_at is None or vm.warned_at < warn_from):
        return Warn(vm=vm.id, reason="max_age",
                    reclaim_at=now + pool.max_age_s - life)
    return None


def select_reclaims(snapshot: Snapshot, config: Config, *, only: Collection[str] | None = None
                    ) -> list[Warn | Terminate]:
    """Warnings and reclaims for allocated VMs; recycles of stale ready VMs; stuck boots.

    `only`: the VMs that have a rule due (from `core.schedule.due_table`); the others are skipped.
    """
    now, policy = snapshot.now, config.policy
    pools = {p.name: p for p in config.pools}
    out: list[Warn | Terminate] = []
    if only is not None and not only:
        return out  # nothing due: the common pass
    vms = snapshot.vms if only is None else [vm for vm in snapshot.vms if vm.id in only]
    for vm in vms:
        pool = pools.get(vm.pool)
        if pool is None:
            continue
        if vm.state == VmState.ALLOCATED:
            verdict = reclaim_verdict(vm, pool, policy, now)
            if verdict is not None:
                out.append(verdict)
        elif vm.state == VmState.READY:
            if vm.ready_at is not None and now - vm.ready_at >= pool.max_ready_age_s:
                out.append(Terminate(vm=vm.id, reason="recycle"))
        elif vm.state in (VmState.BOOTING, VmState.REQUESTED) and now - vm.created_at >= policy.boot_timeout_s:
            out.append(Terminate(vm=vm.id, reason="boot_timeout"))
    return out
