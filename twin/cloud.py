"""`SimCloud`: a simulated cloud implementing the core's `Cloud` port on a SimPy environment.

It models what a real cloud does on its own timeline: boots that take a random time and sometimes
fail, API calls that sometimes fail, a quota, outages (everything down, running VMs lost) and slow
periods (boots take longer). The adapter itself never sleeps: boots finish through SimPy timeouts,
and whoever drives the environment (the twin, or the live VMM on a real-time environment) advances
them.
"""
from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import simpy

from core.ports import CloudError, CloudVm, CloudVmState

DOWN, SLOW, ERRORS = "down", "slow", "errors"


@dataclass(frozen=True)
class Outage:
    """A period when the cloud is down, slow (boots take `factor` times longer) or erratic."""

    start: float
    end: float
    mode: str = DOWN
    factor: float = 5.0  # SLOW: boot time multiplier
    error_rate: float = 1.0  # ERRORS: share of API calls that fail


@dataclass(frozen=True)
class SimCloudSpec:
    """How a simulated cloud behaves."""

    name: str
    quota: int = 100
    boot_median_s: float = 90.0
    boot_sigma: float = 0.25  # lognormal shape of boot times
    boot_failure_rate: float = 0.01
    api_error_rate: float = 0.0
    outages: tuple[Outage, ...] = ()


# listener(kind, vm_id): kind is "running", "boot_failed", "lost", "down" or "up" (vm_id None).
Listener = Callable[[str, str | None], None]


class _SimVm:
    __slots__ = ("id", "state", "tags", "created_at")

    def __init__(self, vm_id: str, tags: Mapping[str, str], created_at: float):
        self.id = vm_id
        self.state = CloudVmState.PENDING
        self.tags = dict(tags)
        self.created_at = created_at


class SimCloud:
    """A simulated cloud; see the module docstring. `rng` makes it deterministic for a seed."""

    def __init__(self, env: simpy.Environment, spec: SimCloudSpec, rng: random.Random, *,
                 listener: Listener | None = None):
        self.name = spec.name
        self.spec = spec
        self._env = env
        self._rng = rng
        self._listener = listener
        self._vms: dict[str, _SimVm] = {}
        self._live = 0  # VMs pending or running: what counts against the quota
        self._ids = itertools.count(1)
        self._mode: str | None = None
        self._outage: Outage | None = None
        self.api_calls = 0  # calls of the Cloud port, answered or not (what an HTTP adapter's requests are)
        for o in spec.outages:
            self._at(o.start, partial(self._begin, o))
            self._at(o.end, partial(self._finish, o))

    # -- the Cloud port -------------------------------------------------------------------------
    def launch(self, *, pool: str, tags: Mapping[str, str]) -> str:
        self._call()
        if self._live >= self.spec.quota:
            raise CloudError(f"{self.name}: quota of {self.spec.quota} VMs reached", quota=True)
        vm = _SimVm(f"{self.name}-{next(self._ids)}", tags, self._env.now)
        self._vms[vm.id] = vm
        self._live += 1
        boot = self._rng.lognormvariate(0.0, self.spec.boot_sigma) * self.spec.boot_median_s
        if self._mode == SLOW and self._outage is not None:
            boot *= self._outage.factor
        failed = self._rng.random() < self.spec.boot_failure_rate
        self._at(self._env.now + boot, lambda: self._booted(vm, failed))
        return vm.id

    def terminate(self, *, vm_id: str) -> None:
        self._call()
        vm = self._vms.pop(vm_id, None)
        if vm is not None:
            if vm.state in (CloudVmState.PENDING, CloudVmState.RUNNING):
                self._live -= 1
            vm.state = CloudVmState.TERMINATED

    def list_vms(self) -> Sequence[CloudVm]:
        self._call()
        return [CloudVm(id=v.id, state=v.state, tags=dict(v.tags), created_at=v.created_at)
                for v in self._vms.values()]

    # -- what the cloud does on its own -----------------------------------------------------------
    @property
    def mode(self) -> str | None:
        """DOWN, SLOW, ERRORS, or None when healthy (for reports; the policy never reads it)."""
        return self._mode

    def _call(self) -> None:
        self.api_calls += 1
        if self._mode == DOWN:
            raise CloudError(f"{self.name}: unreachable")
        outage = self._outage
        rate = outage.error_rate if self._mode == ERRORS and outage is not None else self.spec.api_error_rate
        if rate and self._rng.random() < rate:
            raise CloudError(f"{self.name}: API error")

    def _booted(self, vm: _SimVm, failed: bool) -> None:
        if vm.state != CloudVmState.PENDING:
            return  # terminated or lost meanwhile
        if failed or self._mode == DOWN:
            vm.state = CloudVmState.ERROR
            self._live -= 1
            self._tell("boot_failed", vm.id)
        else:
            vm.state = CloudVmState.RUNNING
            self._tell("running", vm.id)

    def _begin(self, o: Outage) -> None:
        self._mode, self._outage = o.mode, o
        self._tell("down", None)
        if o.mode == DOWN:
            lost = [v for v in self._vms.values() if v.state in (CloudVmState.PENDING, CloudVmState.RUNNING)]
            for v in lost:
                v.state = CloudVmState.TERMINATED
                self._live -= 1
                del self._vms[v.id]
                self._tell("lost", v.id)

    def _finish(self, o: Outage) -> None:
        if self._outage is o:
            self._mode, self._outage = None, None
            self._tell("up", None)

    def _at(self, t: float, fn: Callable[[], None]) -> None:
        ev = self._env.timeout(max(0.0, t - self._env.now))
        ev.callbacks.append(lambda _ev: fn())

    def _tell(self, kind: str, vm_id: str | None) -> None:
        if self._listener is not None:
            self._listener(kind, vm_id)
