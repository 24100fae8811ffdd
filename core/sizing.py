"""Reserve sizing: how many VMs each pool should launch (or trim) in this pass."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.census import Census, census_of
from core.config import Config
from core.dues import SURPLUS_AGE_S
from core.snapshot import LIVE_STATES, Snapshot, VmState


@dataclass(frozen=True)
class PoolNeed:
    """One pool's deficit after this pass's assignments, and the ready VMs it could spare."""

    pool: str
    target: int  # ready VMs wanted: the reserve plus requests still waiting
    available: int  # ready VMs that count plus boots that should finish
    launch: int  # how many to launch (bounded by max_total)
    surplus: tuple[str, ...] = ()  # ready VMs beyond the target, oldest first


def size_pools(snapshot: Snapshot, config: Config, *, removed: set[str], assigned: set[str],
               served: set[str], discounted_clouds: set[str],
               targets: Mapping[str, int] | None = None, min_surplus_age_s: float = SURPLUS_AGE_S,
               census: Census | None = None) -> list[PoolNeed]:
    """Per pool: reserve target (min_ready, or a forecast's target) plus unserved requests, less what
    is ready or booting; never above `max_total`.

    `removed` VMs (terminated this pass) and `assigned` ones no longer count as ready. VMs on
    `discounted_clouds` (backed off or going down) do not count as the reserve: it is rebuilt
    elsewhere. Booting VMs count, so a pass during a boot does not launch again (no overshoot).
    `census`: this snapshot's (see core.census), else one is counted afresh.
    """
    now = snapshot.now
    c = census if census is not None else census_of(snapshot, config)
    waiting: dict[str, int] = {}
    for r in snapshot.requests:
        if r.id not in served:
            waiting[r.pool] = waiting.get(r.pool, 0) + 1
    live = {p.name: c.live.get(p.name, 0) for p in config.pools}
    available = dict.fromkeys(live, 0)
    for (pool, cloud), n in c.unallocated.items():
        if pool in available and cloud not in discounted_clouds:
            available[pool] += n
    # Counts come from the census; the few VMs removed or assigned in this pass are taken out here.
    for vid in removed | assigned:
        vm = c.by_id.get(vid)
        if vm is None or vm.state not in LIVE_STATES or vm.pool not in live:
            continue
        if vid in removed:
            live[vm.pool] -= 1
        if vm.state is not VmState.ALLOCATED and vm.cloud not in discounted_clouds:
            available[vm.pool] -= 1
    spare: dict[str, list[tuple[float, str]]] = {}
    for pool in live:
        for vm in c.ready.get(pool, {}).values():
            if (vm.ready_at is not None and now - vm.ready_at >= min_surplus_age_s and vm.id not in removed
                    and vm.id not in assigned and vm.cloud not in discounted_clouds):
                spare.setdefault(pool, []).append((vm.ready_at, vm.id))
    out = []
    for pool in config.pools:
        reserve = pool.min_ready if targets is None else targets.get(pool.name, pool.min_ready)
        target = reserve + waiting.get(pool.name, 0)
        have = available[pool.name]
        room = max(0, pool.max_total - live[pool.name])
        launch = min(max(0, target - have), room)
        extra = max(0, have - target)
        surplus = tuple(vid for _, vid in sorted(spare.get(pool.name, []))[:extra])
        out.append(PoolNeed(pool.name, target, have, launch, surplus))
    return out
