"""What counts as a VM being used: the user's input, or its CPU or I/O being busy.

A long computation left running shows no input for hours but keeps the CPU busy: it must not be
culled. The shell samples CPU and I/O and keeps `last_busy_at` with `is_busy`.
"""
from __future__ import annotations

from core.config import PolicyConfig
from core.snapshot import Vm


def is_busy(cpu_percent: float, io_bytes_per_s: float, policy: PolicyConfig) -> bool:
    """True when a sample shows work being done."""
    return cpu_percent >= policy.busy_cpu_percent or io_bytes_per_s >= policy.busy_io_bytes_per_s


def last_activity(vm: Vm, now: float, policy: PolicyConfig) -> float:
    """The latest sign of use of an allocated VM: allocation, input, or busy CPU or I/O."""
    if is_busy(vm.cpu_percent, vm.io_bytes_per_s, policy):
        return now
    # Written out rather than max() over a filtered list: this runs for every allocated VM every pass.
    best = vm.created_at if vm.allocated_at is None else vm.allocated_at
    t = vm.last_input_at
    if t is not None and t > best:
        best = t
    t = vm.last_busy_at
    if t is not None and t > best:
        best = t
    return best
