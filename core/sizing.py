"""Reserve sizing: how many VMs each pool should launch (or trim) in this pass."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.census import Census, removed_vms, take_census
from core.config import Config
from core.snapshot import Snapshot, VmState

SURPLUS_AGE_S = 600.0  # a ready VM is trimmed as surplus only after this long, so reserves don't flap


@dataclass(frozen=True)
class PoolNeed:
    """One pool's deficit after this pass's assignments, and the ready VMs it could spare."""

    pool: str
    target: int  # ready VMs wanted: the reserve plus requests still waiting
    available: int  # ready VMs that count plus boots that should finish
    launch: int  # how many to launch (bounded by max_total)
    surplus: tuple[str, ...] = ()  # ready VMs beyond the target, oldest first
    urgent: int = 0  # of `launch`, those users are waiting for now (nothing ready or booting for them)


def size_pools(snapshot: Snapshot, config: Config, *, removed: set[str], assigned: set[str],
               served: set[str], discounted_clouds: set[str],
               targets: Mapping[str, int] | None = None, min_surplus_age_s: float = SURPLUS_AGE_S,
               census: Census | None = None) -> list[PoolNeed]:
    """Per pool: reserve target (min_ready, or a forecast's target) plus unserved requests, less what
    is ready or booting; never above `max_total`.

    `removed` VMs (terminated this pass) and `assigned` ones no longer count as ready. VMs on
    `discounted_clouds` (backed off or going down) do not count as the reserve: it is rebuilt
    elsewhere. Booting VMs count, so a pass during a boot does not launch again (no overshoot).
    `census`: the snapshot's, if the caller has taken it already.
    """
    now = snapshot.now
    c = census if census is not None else take_census(snapshot)
    waiting: dict[str, int] = {}
    for r in snapshot.requests:
        if r.id not in served:
            waiting[r.pool] = waiting.get(r.pool, 0) + 1
    live = {p.name: c.live.get(p.name, 0) for p in config.pools}
    available = {p: sum(n for cloud, n in c.unallocated.get(p, {}).items() if cloud not in discounted_clouds)
                 for p in live}
    for vm in removed_vms(snapshot, removed):  # they were counted above; they no longer count
        if vm.pool in live:
            live[vm.pool] -= 1
            if vm.state is not VmState.ALLOCATED and vm.cloud not in discounted_clouds:
                available[vm.pool] -= 1
    spare: dict[str, list[tuple[float, str]]] = {}
    for name, ready in c.ready.items():
        if name not in live:
            continue
        for vm in ready:
            if vm.cloud in discounted_clouds or vm.id in removed:
                continue
            if vm.id in assigned:
                available[name] -= 1
                continue
            if vm.ready_at is not None and now - vm.ready_at >= min_surplus_age_s:
                spare.setdefault(name, []).append((vm.ready_at, vm.id))
    out = []
    for pool in config.pools:
        reserve = pool.min_ready if targets is None else targets.get(pool.name, pool.min_ready)
        target = reserve + waiting.get(pool.name, 0)
        have = available[pool.name]
        room = max(0, pool.max_total - live[pool.name])
        launch = min(max(0, target - have), room)
        extra = max(0, have - target)
        surplus = tuple(vid for _, vid in sorted(spare.get(pool.name, []))[:extra])
        urgent = min(launch, max(0, waiting.get(pool.name, 0) - have))
        out.append(PoolNeed(pool.name, target, have, launch, surplus, urgent))
    return out
