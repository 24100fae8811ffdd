"""When the policy next needs a pass if nothing else happens.

Every time-driven rule of the policy (idle warnings and reclaims, max age, recycling, boot timeouts,
slow-boot judgement, health evidence ageing out of the window, backoff ends, probes without an
outcome, maintenance windows)
has a due time that follows from the snapshot. A shell may skip a periodic pass that comes before
`next_wakeup`: the pass would decide nothing. Events (a request, a boot, a loss) still need a pass,
or at least `vm_wakeup` of the VM they changed, to bring the wakeup forward.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from core.activity import is_busy, last_activity
from core.config import Config, PoolConfig
from core.health import BACKOFF, PROBING, CloudHealth
from core.sizing import SURPLUS_AGE_S
from core.snapshot import CloudObservation, Snapshot, Vm, VmState

_EPS = 1e-6  # rules that compare with ">" fire just after their limit


def vm_due_times(vm: Vm, pool: PoolConfig, config: Config) -> tuple[float, ...]:
    """When each time-driven rule for one VM falls due, sorted (surplus trimming aside).

    They depend only on the VM's fields and the configuration, never on `now`, so a shell or the
    policy's memory may keep them for as long as the VM does not change.
    """
    policy = config.policy
    state = vm.state
    if state is VmState.ALLOCATED:
        start = vm.allocated_at if vm.allocated_at is not None else vm.created_at
        if is_busy(vm.cpu_percent, vm.io_bytes_per_s, policy):
            idle = math.inf  # stays active until a new sample says otherwise
        else:
            active = last_activity(vm, start, policy)
            warned_at = vm.warned_at
            if warned_at is not None and warned_at >= active:
                idle = warned_at + pool.grace_s
            else:
                idle = active + pool.idle_timeout_s
        return tuple(sorted((start + pool.max_age_s - pool.grace_s, start + pool.max_age_s, idle)))
    if state is VmState.READY:
        return () if vm.ready_at is None else (vm.ready_at + pool.max_ready_age_s,)
    if state is VmState.BOOTING or state is VmState.REQUESTED:
        try:
            expected = config.cloud(vm.cloud).expected_boot_s
        except KeyError:
            expected = math.inf
        return tuple(sorted((vm.created_at + policy.boot_timeout_s,
                             vm.created_at + policy.health.slow_factor * expected + _EPS)))
    return ()


def surplus_due(vm: Vm) -> float:
    """When a ready VM may be trimmed as surplus (if its pool has more than its target)."""
    return vm.ready_at + SURPLUS_AGE_S if vm.state is VmState.READY and vm.ready_at is not None else math.inf


def first_after(times: tuple[float, ...], after: float) -> float:
    """The first of sorted `times` later than `after` (inf: none)."""
    for t in times:
        if t > after:
            return t
    return math.inf


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
    return min(s.at for s in obs.samples) + config.policy.health.window_s + _EPS


DueTable = Mapping[str, tuple[Vm, tuple[float, ...]]]  # VM id -> (the VM object, its due times)


def known_due_times(vm: Vm, pools: Mapping[str, PoolConfig], config: Config, table: DueTable
                    ) -> tuple[float, ...]:
    """`vm`'s due times: `table`'s entry when it was made for this very (unchanged) object, else computed."""
    entry = table.get(vm.id)
    if entry is not None and entry[0] is vm:
        return entry[1]
    return _pool_due_times(vm, pools, config)


def _pool_due_times(vm: Vm, pools: Mapping[str, PoolConfig], config: Config) -> tuple[float, ...]:
    pool = pools.get(vm.pool)
    return vm_due_times(vm, pool, config) if pool is not None else ()  # a VM of no configured pool: none


def due_table(snapshot: Snapshot, config: Config, previous: DueTable) -> dict[str, tuple[Vm, tuple[float, ...]]]:
    """Each VM's due times, reusing `previous` entries whose VM is the very same (unchanged) object."""
    pools = {p.name: p for p in config.pools}
    # Any, not the entry's tuple type: compiled (mypyc), a fixed-size tuple is unpacked and rebuilt,
    # so a kept entry would be a new object each pass.
    out: dict[str, Any] = {}
    get: Callable[[str], Any] = previous.get
    for vm in snapshot.vms:
        old = get(vm.id)  # the entry itself is kept, so the next pass finds it unchanged too
        out[vm.id] = old if old is not None and old[0] is vm else (vm, _pool_due_times(vm, pools, config))
    return out


def next_wakeup(snapshot: Snapshot, config: Config, clouds: Mapping[str, CloudHealth] | None = None,
                surplus_pools: set[str] | None = None, *, after: float | None = None,
                dues: DueTable | None = None) -> float:
    """The earliest time after `after` (default `now`) when some time-driven rule could change a decision.

    `surplus_pools`: the pools with more ready or booting VMs than their target (from the last
    decision's needs); only their ready VMs can become surplus with time. None means any pool may.
    A shell re-checking between passes gives `after` = the time of its last pass, so a rule that fell
    due since then is not missed.
    """
    now = snapshot.now
    floor = now if after is None else after
    pools = {p.name: p for p in config.pools}
    table = dues or {}
    best = math.inf
    for vm in snapshot.vms:  # one walk, reusing the due times of VMs unchanged since the table was made
        for t in known_due_times(vm, pools, config, table):
            if t > floor:
                if t < best:
                    best = t
                break
        if surplus_pools is None or vm.pool in surplus_pools:
            t = surplus_due(vm)
            if floor < t < best:
                best = t
    return min(best, cloud_wakeup(snapshot.clouds, config, clouds, after=floor))


def cloud_wakeup(observations: tuple[CloudObservation, ...], config: Config,
                 clouds: Mapping[str, CloudHealth] | None = None, *, after: float) -> float:
    """`next_wakeup`'s rules that concern clouds, not VMs: health evidence ageing out, backoffs
    ending, probes timing out, maintenance windows. The first of their due times later than `after`."""
    due = [evidence_wakeup(obs, config) for obs in observations]
    for h in (clouds or {}).values():
        if h.status == BACKOFF:
            due.append(h.until)
        elif h.status == PROBING and h.probe_sent:
            due.append(h.probe_at + config.policy.boot_timeout_s)  # a probe with no outcome fails then
    lead = config.policy.maintenance_lead_s
    for c in config.clouds:
        for w in c.maintenance:
            due += (w.start - lead, w.start, w.end)
    return min((t for t in due if t > after), default=math.inf)
