"""When the policy next needs a pass if nothing else happens.

Every time-driven rule of the policy (idle warnings and reclaims, max age, recycling, boot timeouts,
slow-boot judgement, health evidence ageing out of the window, backoff ends, maintenance windows)
has a due time that follows from the snapshot. A shell may skip a periodic pass that comes before
`next_wakeup`: the pass would decide nothing. Events (a request, a boot, a loss) still need a pass.
"""
from __future__ import annotations

import math

from core.activity import is_busy, last_activity
from core.config import Config
from core.health import BACKOFF, CloudHealth
from core.sizing import SURPLUS_AGE_S
from core.snapshot import Snapshot, VmState

_EPS = 1e-6  # rules that compare with ">" fire just after their limit


def next_wakeup(snapshot: Snapshot, config: Config, clouds: dict[str, CloudHealth] | None = None) -> float:
    """The earliest time after `snapshot.now` when some time-driven rule could change a decision."""
    now, policy = snapshot.now, config.policy
    pools = {p.name: p for p in config.pools}
    expected = {c.name: c.expected_boot_s for c in config.clouds}
    due: list[float] = []
    add = due.append
    for vm in snapshot.vms:
        pool = pools.get(vm.pool)
        if pool is None:
            continue
        state = vm.state
        if state is VmState.ALLOCATED:
            start = vm.allocated_at if vm.allocated_at is not None else vm.created_at
            add(start + pool.max_age_s - pool.grace_s)
            add(start + pool.max_age_s)
            if is_busy(vm.cpu_percent, vm.io_bytes_per_s, policy):
                continue  # stays active until a new sample says otherwise
            active = last_activity(vm, now, policy)
            if vm.warned_at is not None and vm.warned_at >= active:
                add(vm.warned_at + pool.grace_s)
            else:
                add(active + pool.idle_timeout_s)
        elif state is VmState.READY:
            if vm.ready_at is not None:
                add(vm.ready_at + pool.max_ready_age_s)
                add(vm.ready_at + SURPLUS_AGE_S)
        elif state in (VmState.BOOTING, VmState.REQUESTED):
            add(vm.created_at + policy.boot_timeout_s)
            add(vm.created_at + policy.health.slow_factor * expected.get(vm.cloud, math.inf) + _EPS)
    for obs in snapshot.clouds:
        if obs.samples:
            add(min(s.at for s in obs.samples) + policy.health.window_s + _EPS)
    for h in (clouds or {}).values():
        if h.status == BACKOFF:
            add(h.until)
    for c in config.clouds:
        for w in c.maintenance:
            add(w.start - policy.maintenance_lead_s)
            add(w.start)
            add(w.end)
    later = [t for t in due if t > now]
    return min(later) if later else math.inf
