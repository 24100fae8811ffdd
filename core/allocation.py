"""Allocation: give waiting requests ready VMs, oldest request first."""
from __future__ import annotations

from core.actions import Assign
from core.census import Census, take_census
from core.config import Config
from core.placement import latency_ms
from core.snapshot import Snapshot


def assign_requests(snapshot: Snapshot, config: Config, unavailable: set[str],
                    going_down: dict[str, float], *, census: Census | None = None) -> list[Assign]:
    """Match pending requests to ready VMs of their pool.

    A VM on a cloud about to go down is used only when nothing else is ready; among the rest the
    one nearest to the user wins, then the one that has waited longest (it would be recycled first).
    """
    if not snapshot.requests:
        return []  # most passes: nobody waiting
    c = census if census is not None else take_census(snapshot)
    ready = {pool: [vm for vm in vms if vm.id not in unavailable] for pool, vms in c.ready.items()}
    regions = {c.name: c.region for c in config.clouds}
    out: list[Assign] = []
    for req in sorted(snapshot.requests, key=lambda r: (r.requested_at, r.id)):
        vms = ready.get(req.pool)
        if not vms:
            continue
        best = min(vms, key=lambda v: (v.cloud in going_down,
                                       latency_ms(req.location, regions.get(v.cloud, ""), config.policy),
                                       v.ready_at if v.ready_at is not None else v.created_at, v.id))
        vms.remove(best)
        out.append(Assign(vm=best.id, request=req.id, user=req.user, pool=req.pool))
    return out
