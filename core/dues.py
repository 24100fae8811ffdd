"""Each VM's rule due times: when, with nothing else changing, a time-driven rule would act on it.

They depend only on the VM's fields and the configuration, never on `now`, so they can be kept for
as long as the VM object stays the same (core.census does) and merged into the policy's next wakeup
(core.schedule).
"""
from __future__ import annotations

import math

from core.activity import is_busy, last_activity
from core.config import Config, PoolConfig
from core.snapshot import Vm, VmState

SURPLUS_AGE_S = 600.0  # a ready VM is trimmed as surplus only after this long, so reserves don't flap
EPS = 1e-6  # rules that compare with ">" fire just after their limit


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
            warned = vm.warned_at is not None and vm.warned_at >= active
            idle = vm.warned_at + pool.grace_s if warned else active + pool.idle_timeout_s
        return tuple(sorted((start + pool.max_age_s - pool.grace_s, start + pool.max_age_s, idle)))
    if state is VmState.READY:
        return () if vm.ready_at is None else (vm.ready_at + pool.max_ready_age_s,)
    if state is VmState.BOOTING or state is VmState.REQUESTED:
        try:
            expected = config.cloud(vm.cloud).expected_boot_s
        except KeyError:
            expected = math.inf
        return tuple(sorted((vm.created_at + policy.boot_timeout_s,
                             vm.created_at + policy.health.slow_factor * expected + EPS)))
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
