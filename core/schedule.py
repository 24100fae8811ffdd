"""When the policy next needs a pass if nothing else happens.

Every time-driven rule of the policy (idle warnings and reclaims, max age, recycling, boot timeouts,
slow-boot judgement, health evidence ageing out of the window, backoff ends, maintenance windows)
has a due time that follows from the snapshot. A shell may skip a periodic pass that comes before
`next_wakeup`: the pass would decide nothing. Events (a request, a boot, a loss) still need a pass,
or at least `vm_wakeup` of the VM they changed, to bring the wakeup forward.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

from core.census import Census, census_of
from core.config import Config, PoolConfig
from core.dues import EPS, first_after, surplus_due, vm_due_times
from core.health import BACKOFF, CloudHealth
from core.snapshot import CloudObservation, Snapshot, Vm

__all__ = ["vm_due_times", "vm_wakeup", "evidence_wakeup", "next_wakeup"]


def vm_wakeup(vm: Vm, pool: PoolConfig, config: Config, *, now: float, after: float,
              surplus: bool = True) -> float:
    """The earliest due time later than `after` of the rules that apply to one VM (inf: none).

    `surplus`: whether this VM's pool has more VMs than its target, so a ready VM may be trimmed.
    """
    t = first_after(vm_due_times(vm, pool, config), after)
    if surplus:
        s = surplus_due(vm)
        if after < s < t:
            t = s
    return t


def evidence_wakeup(obs: CloudObservation, config: Config) -> float:
    """When the oldest health evidence leaves the window, if that could change the verdict.

    With only good samples the verdict is GOOD whichever of them remain, so nothing is due.
    """
    if not obs.samples:
        return math.inf
    try:
        limit = config.policy.health.slow_factor * config.cloud(obs.cloud).expected_boot_s
    except KeyError:
        limit = math.inf
    if all(s.ok and not (s.kind == "boot" and s.duration_s > limit) for s in obs.samples):
        return math.inf
    return min(s.at for s in obs.samples) + config.policy.health.window_s + EPS


def next_wakeup(snapshot: Snapshot, config: Config, clouds: Mapping[str, CloudHealth] | None = None,
                surplus_pools: set[str] | None = None, *, after: float | None = None,
                census: Census | None = None) -> float:
    """The earliest time after `after` (default `now`) when some time-driven rule could change a decision.

    `surplus_pools`: the pools with more ready or booting VMs than their target (from the last
    decision's needs); only their ready VMs can become surplus with time. None means any pool may.
    A shell re-checking between passes gives `after` = the time of its last pass, so a rule that fell
    due since then is not missed. `census`: the last pass's (`Decision.memory.census`), so only the
    VMs changed since are looked at.
    """
    now = snapshot.now
    floor = now if after is None else after
    cen = census_of(snapshot, config, census)
    best = cen.next_due(floor)
    for pool, ready in cen.ready.items():
        if surplus_pools is None or pool in surplus_pools:
            for vm in ready.values():
                t = surplus_due(vm)
                if floor < t < best:
                    best = t
    due = [evidence_wakeup(obs, config) for obs in snapshot.clouds]
    for h in (clouds or {}).values():
        if h.status == BACKOFF:
            due.append(h.until)
    lead = config.policy.maintenance_lead_s
    for c in config.clouds:
        for w in c.maintenance:
            due += (w.start - lead, w.start, w.end)
    return min([best, *(t for t in due if t > floor)])
