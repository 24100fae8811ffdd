"""One policy pass: `decide(snapshot, config, memory) -> Decision`.

The twin and the live VMM call this and nothing else of the policy. Each step is its own function
(health, reclaim, maintenance, allocation, sizing, placement); this module only composes them and
carries memory from one pass to the next explicitly.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from core.actions import Action, Assign, Drain, Launch, Terminate, Warn
from core.allocation import assign_requests
from core.census import Census, removed_vms, take_census
from core.config import Config
from core.health import FRESH, PROBING, CloudHealth, HealthChange, update_health, usable
from core.maintenance import clouds_going_down, plan_maintenance
from core.placement import place_launches, place_urgent
from core.reclaim import select_reclaims
from core.schedule import due_table
from core.sizing import PoolNeed, size_pools
from core.snapshot import Snapshot, Vm


@dataclass(frozen=True)
class PolicyMemory:
    """State the policy carries between passes (the shell stores it, the policy owns it)."""

    clouds: Mapping[str, CloudHealth] = field(default_factory=dict)
    # Each VM's rule due times, kept while the VM object stays the same (see core.schedule.due_table),
    # so a pass evaluates the reclaim rules only of VMs with something due.
    vm_dues: Mapping[str, tuple[Vm, tuple[float, ...]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What one pass decided: actions to apply, memory for the next pass, notes for the log."""

    actions: tuple[Action, ...]
    memory: PolicyMemory
    health_changes: tuple[HealthChange, ...] = ()
    needs: tuple[PoolNeed, ...] = ()


def decide(snapshot: Snapshot, config: Config, memory: PolicyMemory | None = None, *,
           targets: Mapping[str, int] | None = None,
           locations: Mapping[str, tuple[tuple[str, float], ...]] | None = None) -> Decision:
    """Decide one pass.

    `targets` overrides each pool's reserve (the predictive sizer passes its forecast here);
    `locations` overrides where each pool's demand comes from (for placement near users).
    """
    memory = memory or PolicyMemory()
    now = snapshot.now
    census = take_census(snapshot)
    health, changes = update_health(snapshot, config, dict(memory.clouds), census=census)
    going_down = clouds_going_down(config, now)
    healthy = {c.name for c in config.clouds if usable(health[c.name]) and c.name not in going_down}

    dues = due_table(snapshot, config, memory.vm_dues)
    due_now = {vid for vid, (_, times) in dues.items() if times and times[0] <= now}
    actions: list[Action] = []
    actions += select_reclaims(snapshot, config, only=due_now)
    # A VM reclaimed in this pass is neither drained nor terminated again for maintenance.
    actions += [a for a in plan_maintenance(snapshot, config, going_down) if not _already(a, actions)]
    removed = {a.vm for a in actions if isinstance(a, Terminate)}

    assigns = assign_requests(snapshot, config, removed, going_down, census=census)
    actions += assigns
    assigned = {a.vm for a in assigns}
    served = {a.request for a in assigns}

    discounted = set(going_down) | {c for c, h in health.items() if not usable(h)}
    needs = size_pools(snapshot, config, removed=removed, assigned=assigned, served=served,
                       discounted_clouds=discounted, targets=targets, census=census)
    headroom = _headroom(snapshot, config, removed, census)
    pools = {p.name: p for p in config.pools}
    for need in needs:
        pool = pools[need.pool]
        locs = locations.get(need.pool) if locations else None
        # Users waiting now get the fastest boot; the rest of the deficit rebuilds the reserve by
        # priority and cost.
        for cloud in place_urgent(pool, need.urgent, config, healthy, headroom, locs):
            actions.append(Launch(pool=need.pool, cloud=cloud, reason="waiting"))
        for cloud in place_launches(pool, need.launch - need.urgent, config, healthy, headroom, locs):
            actions.append(Launch(pool=need.pool, cloud=cloud, reason="reserve"))
        actions += [Terminate(vm=v, reason="surplus") for v in need.surplus]

    health = _send_probes(health, config, going_down, headroom, actions, now)
    return Decision(tuple(actions), PolicyMemory(health, dues), tuple(changes), tuple(needs))


def launchable_clouds(config: Config, memory: PolicyMemory, now: float) -> set[str]:
    """Clouds that may take a launch now: healthy in the policy's view and not going down.

    The shell uses this to fail a refused launch over to the next cloud within the same pass.
    """
    going_down = clouds_going_down(config, now)
    return {c.name for c in config.clouds
            if usable(memory.clouds.get(c.name, FRESH)) and c.name not in going_down}


def _already(t: Terminate | Drain, actions: list[Action]) -> bool:
    return any(isinstance(a, Terminate) and a.vm == t.vm for a in actions)


def _headroom(snapshot: Snapshot, config: Config, removed: set[str], census: Census) -> dict[str, int]:
    used = {c.name: census.cloud_live.get(c.name, 0) for c in config.clouds}
    for vm in removed_vms(snapshot, removed):
        if vm.cloud in used:
            used[vm.cloud] -= 1
    return {c.name: c.quota - used[c.name] for c in config.clouds}


def _send_probes(health: dict[str, CloudHealth], config: Config, going_down: Mapping[str, float],
                 headroom: dict[str, int], actions: list[Action], now: float) -> dict[str, CloudHealth]:
    """One probe launch for each cloud whose backoff just ended."""
    out = dict(health)
    for cloud in config.clouds:
        h = health[cloud.name]
        if h.status != PROBING or h.probe_sent or cloud.name in going_down or headroom[cloud.name] <= 0:
            continue
        pool = next((p for p in config.pools if not p.clouds or cloud.name in p.clouds), None)
        if pool is None:
            continue
        actions.append(Launch(pool=pool.name, cloud=cloud.name, reason="probe", probe=True))
        headroom[cloud.name] -= 1
        out[cloud.name] = replace(h, probe_sent=True, probe_at=now)
    return out


__all__ = ["Decision", "PolicyMemory", "decide", "launchable_clouds", "Assign", "Drain", "Launch", "Terminate", "Warn"]
