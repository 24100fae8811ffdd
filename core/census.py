"""A census of a snapshot's VMs: the counts and indexes one pass needs, carried from pass to pass
and updated only for the VMs that changed.

A pass walked every VM five times (health, reclaim dues, allocation, sizing, quota headroom) and the
wakeup a sixth; with a few hundred VMs and a pass per request, those walks were most of the twin's
time. Shells keep an unchanged VM as the very same frozen object from one snapshot to the next, so
the census finds what changed by object identity (in C, not a Python loop) and updates its counts
for those VMs only.

`census_of(snapshot, config, previous)` equals what a census built from scratch would hold (the
tests check it pass after pass): the previous census is a cache, never a source of truth, and an
unrelated one (another config, time going backwards) is simply ignored. VM ids must be unique
within a snapshot, as they are in both shells (a dict in the twin, a primary key in the store).
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from core.config import Config
from core.dues import vm_due_times
from core.snapshot import LIVE_STATES, Snapshot, Vm, VmState

# The rule due times of one VM (see core.dues.vm_due_times), keyed by VM id with the object
# they were computed from.
DueTable = Mapping[str, tuple[Vm, tuple[float, ...]]]

_UNALLOCATED = frozenset({VmState.REQUESTED, VmState.BOOTING, VmState.READY})
_BOOTING = frozenset({VmState.REQUESTED, VmState.BOOTING})


@dataclass(frozen=True, eq=False)
class Census:
    """Counts and indexes of one snapshot's VMs at `now` (read-only: a new pass makes a new one)."""

    now: float
    config: Config
    members: Mapping[int, Vm]  # id(vm) -> vm: the snapshot's objects, kept alive so identities stay unique
    by_id: Mapping[str, Vm]
    live: Mapping[str, int]  # pool -> VMs in a live state (requested, booting, ready, allocated)
    cloud_live: Mapping[str, int]  # cloud -> VMs in a live state
    unallocated: Mapping[tuple[str, str], int]  # (pool, cloud) -> requested, booting or ready VMs
    ready: Mapping[str, Mapping[str, Vm]]  # pool -> its ready VMs by id
    booting: Mapping[str, Mapping[str, float]]  # cloud -> its requested or booting VMs' created_at by id
    dues: DueTable
    overdue: Mapping[str, Vm]  # VMs whose first due time is at or before `now`
    # Heaps of (time, sequence, vm id, vm); an entry whose vm is no longer the one in `dues` is stale
    # and skipped. `_first` holds first due times still after `now`; `_times` every due time after `now`.
    _first: tuple[tuple[float, int, str, Vm], ...]
    _times: tuple[tuple[float, int, str, Vm], ...]
    _seq: int

    def booting_ages(self, cloud: str) -> list[float]:
        """How long each VM still booting on `cloud` has been at it."""
        now = self.now
        return [now - t for t in self.booting.get(cloud, {}).values()]

    def next_due(self, after: float) -> float:
        """The earliest rule due time of any VM later than `after` (inf: none).

        `after` at or past `now` is answered from the heap; an earlier one (a shell re-checking
        since its last pass) by a walk over the due table.
        """
        if after < self.now:
            best = math.inf
            for _vm, times in self.dues.values():
                for t in times:
                    if t > after:
                        best = min(best, t)
                        break
            return best
        dues, heap = self.dues, self._times
        if heap and heap[0][0] > after and dues.get(heap[0][2], (None,))[0] is heap[0][3]:
            return heap[0][0]  # the common case: the top entry is current
        h = list(heap)
        while h:
            t, _seq, vid, vm = heapq.heappop(h)
            if t > after and dues.get(vid, (None,))[0] is vm:
                return t
        return math.inf


def census_of(snapshot: Snapshot, config: Config, previous: Census | None = None) -> Census:
    """The census of `snapshot`, updated from `previous` when that one is a census of the same config
    at an earlier or equal time (else built from scratch)."""
    vms = snapshot.vms
    now = snapshot.now
    members = dict(zip(map(id, vms), vms, strict=True))
    if previous is None or previous.config is not config or now < previous.now:
        return _build(now, config, members)
    old = previous.members
    removed = [old[k] for k in old.keys() - members.keys()]
    added = [members[k] for k in members.keys() - old.keys()]
    if not removed and not added and (now == previous.now or not _comes_due(previous, now)):
        # Nothing changed and no due time came: the previous census holds, but for `now`.
        return previous if now == previous.now else replace(previous, now=now, members=members)
    if len(removed) + len(added) > len(vms):  # mostly new: a fresh count is cheaper
        return _build(now, config, members)
    w = _Writer(previous, now, config, members)
    for vm in removed:  # a changed VM is its old object removed and its new one added
        w.remove(vm)
    for vm in added:
        w.add(vm)
    return w.finish()


def _comes_due(census: Census, now: float) -> bool:
    """Whether a due time of `census` is at or before `now` (so its heaps and overdue set move)."""
    return bool(census._times and census._times[0][0] <= now or census._first and census._first[0][0] <= now)


def _build(now: float, config: Config, members: dict[int, Vm]) -> Census:
    w = _Writer(None, now, config, members)
    for vm in members.values():
        w.add(vm)
    return w.finish()


class _Writer:
    """Copy-on-write over a previous census: copies a mapping the first time it is changed."""

    def __init__(self, previous: Census | None, now: float, config: Config, members: dict[int, Vm]):
        self.now, self.config, self.members = now, config, members
        self.pools = {p.name: p for p in config.pools}
        if previous is None:
            self.by_id: dict[str, Vm] = {}
            self.live: dict[str, int] = {}
            self.cloud_live: dict[str, int] = {}
            self.unallocated: dict[tuple[str, str], int] = {}
            self.ready: dict[str, dict[str, Vm]] = {}
            self.booting: dict[str, dict[str, float]] = {}
            self.dues: dict[str, tuple[Vm, tuple[float, ...]]] = {}
            self.overdue: dict[str, Vm] = {}
            self.first: list = []
            self.times: list = []
            self.seq = 0
            self._own = None  # everything is ours already
        else:
            p = previous
            self.by_id, self.live, self.cloud_live = dict(p.by_id), dict(p.live), dict(p.cloud_live)
            self.unallocated, self.dues = dict(p.unallocated), dict(p.dues)
            self.overdue = dict(p.overdue)
            self.ready, self.booting = dict(p.ready), dict(p.booting)
            self.first, self.times, self.seq = list(p._first), list(p._times), p._seq
            self._own = set()  # inner mappings of ready/booting copied so far

    def _inner(self, outer: dict, key: str) -> dict:
        inner = outer.get(key)
        if inner is None:
            inner = outer[key] = {}
        elif self._own is not None and (id(outer), key) not in self._own:
            inner = outer[key] = dict(inner)
            self._own.add((id(outer), key))
        return inner

    def remove(self, vm: Vm) -> None:
        vid, state = vm.id, vm.state
        if self.by_id.get(vid) is vm:
            del self.by_id[vid]
        entry = self.dues.get(vid)
        if entry is not None and entry[0] is vm:
            del self.dues[vid]
        if self.overdue.get(vid) is vm:
            del self.overdue[vid]
        if state not in LIVE_STATES:
            return
        self.live[vm.pool] -= 1
        self.cloud_live[vm.cloud] -= 1
        if state is VmState.ALLOCATED:
            return
        self.unallocated[vm.pool, vm.cloud] -= 1
        if state is VmState.READY:
            del self._inner(self.ready, vm.pool)[vid]
        else:
            del self._inner(self.booting, vm.cloud)[vid]

    def add(self, vm: Vm) -> None:
        vid, state = vm.id, vm.state
        self.by_id[vid] = vm
        pool = self.pools.get(vm.pool)
        times = vm_due_times(vm, pool, self.config) if pool is not None else ()
        self.dues[vid] = (vm, times)
        if times:
            self.seq += 1
            if times[0] <= self.now:
                self.overdue[vid] = vm
            else:
                heapq.heappush(self.first, (times[0], self.seq, vid, vm))
            for t in times:
                if t > self.now:
                    self.seq += 1
                    heapq.heappush(self.times, (t, self.seq, vid, vm))
        if state not in LIVE_STATES:
            return
        self.live[vm.pool] = self.live.get(vm.pool, 0) + 1
        self.cloud_live[vm.cloud] = self.cloud_live.get(vm.cloud, 0) + 1
        if state is VmState.ALLOCATED:
            return
        key = (vm.pool, vm.cloud)
        self.unallocated[key] = self.unallocated.get(key, 0) + 1
        if state is VmState.READY:
            self._inner(self.ready, vm.pool)[vid] = vm
        else:
            self._inner(self.booting, vm.cloud)[vid] = vm.created_at

    def finish(self) -> Census:
        now, dues = self.now, self.dues
        first, times = self.first, self.times
        while first and first[0][0] <= now:  # first due times that have come: those VMs are overdue
            _t, _s, vid, vm = heapq.heappop(first)
            if dues.get(vid, (None,))[0] is vm:
                self.overdue[vid] = vm
        while times and times[0][0] <= now:
            heapq.heappop(times)
        # Stale entries (VMs changed or gone) wait in the heaps until their time; compact when they
        # outnumber the live ones, so the heaps stay proportional to the VMs.
        if len(times) > 4 * len(dues) + 64:
            times = [e for e in times if dues.get(e[2], (None,))[0] is e[3]]
            heapq.heapify(times)
        if len(first) > 2 * len(dues) + 64:
            first = [e for e in first if dues.get(e[2], (None,))[0] is e[3]]
            heapq.heapify(first)
        return Census(now=now, config=self.config, members=self.members, by_id=self.by_id, live=self.live,
                      cloud_live=self.cloud_live, unallocated=self.unallocated, ready=self.ready,
                      booting=self.booting, dues=dues, overdue=self.overdue, _first=tuple(first),
                      _times=tuple(times), _seq=self.seq)
