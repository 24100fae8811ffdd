"""Planned downtime: before a cloud's window, grow reserves elsewhere and warn its users; during it,
launch nothing there and drain what it holds idle."""
from __future__ import annotations

from core.actions import Drain, Terminate
from core.config import CloudConfig, Config
from core.snapshot import Snapshot, VmState


def current_window_end(cloud: CloudConfig, now: float) -> float | None:
    """The end of the window `now` falls in, or None."""
    for w in cloud.maintenance:
        if w.contains(now):
            return w.end
    return None


def next_window_start(cloud: CloudConfig, now: float, lead_s: float) -> float | None:
    """The start of a window that is running or begins within `lead_s` (inclusive), or None."""
    for w in cloud.maintenance:
        # Inclusive, so the lead starts exactly at `start - lead_s`, the wakeup `core.schedule` gives.
        if w.contains(now) or now <= w.start <= now + lead_s:
            return w.start
    return None


def clouds_going_down(config: Config, now: float) -> dict[str, float]:
    """Clouds inside a window or about to enter one, with the window's start.

    Launches avoid them and their ready VMs no longer count towards reserves, so the reserve grows
    elsewhere before the window starts.
    """
    out = {}
    for c in config.clouds:
        start = next_window_start(c, now, config.policy.maintenance_lead_s)
        if start is not None:
            out[c.name] = start
    return out


def plan_maintenance(snapshot: Snapshot, config: Config, going_down: dict[str, float]
                     ) -> list[Drain | Terminate]:
    """Drain notices for users on a cloud about to go down; delete its idle VMs once it is down."""
    actions: list[Drain | Terminate] = []
    if not going_down:
        return actions
    now = snapshot.now
    for vm in snapshot.vms:
        start = going_down.get(vm.cloud)
        if start is None:
            continue
        if vm.state == VmState.ALLOCATED:
            if not vm.drained:
                actions.append(Drain(vm=vm.id, cloud=vm.cloud, at=start))
        elif now >= start and vm.state in (VmState.READY, VmState.BOOTING, VmState.REQUESTED):
            actions.append(Terminate(vm=vm.id, reason="maintenance"))
    return actions
