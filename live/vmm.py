"""The live VMM: one driven pass (`Vmm.run_pass(now)`) of list, reconcile, decide and apply.

A pass lists each cloud once, reconciles what the clouds hold with the store, builds the core's
snapshot, calls `core.policy.decide` and applies its actions (live.apply). Nothing here sleeps or
loops: the CLI loops and sleeps, tests call `run_pass` directly with the `now` they choose.

Reconcile rules (Nodepool's, plus daaas's intent rows):
- a store VM with a cloud id that its cloud no longer lists (or lists terminated) is gone;
- a `requested` row (intent written, launch answer not recorded: a crash) whose tagged VM appears is
  adopted as booting; one older than `request_timeout_s` with no VM is gone;
- a cloud VM tagged with our owner id that the store does not know is deleted only when a SECOND
  pass has seen it, so a launch racing the listing is never taken for a leak;
- a booting VM that runs is ready (a boot sample with its duration), one in error failed to boot.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from core import events as ev
from core.config import Config
from core.policy import Decision, PolicyMemory, decide
from core.ports import OWNER_TAG, VM_TAG, Cloud, CloudError, CloudVm, CloudVmState
from core.snapshot import HealthSample
from live.apply import apply_actions, terminate
from live.snapshot_builder import build_snapshot
from live.store.repo import (
    ALLOCATED,
    BOOTING,
    GONE,
    PENDING,
    READY,
    RECLAIMING,
    REQUESTED,
    Store,
)
from live.usage_log import UsageLog

T = TypeVar("T")
ABSENT = frozenset({CloudVmState.TERMINATED})


@dataclass(frozen=True)
class VmmOptions:
    """Knobs of the shell (the policy's are in core.config)."""

    request_timeout_s: float = 300.0  # an intent row with no cloud VM after this is gone
    terminate_retry_s: float = 60.0  # repeat a terminate that the cloud has not carried out
    load_every_s: float = 60.0  # `load` events at most this often
    leak_passes: int = 2  # passes that must see an unknown tagged VM before it is deleted


@dataclass(frozen=True)
class PassResult:
    """What one pass did, for the CLI's line per pass and for tests."""

    now: float
    listed: Mapping[str, int | None]  # VMs listed per cloud (None: the listing failed)
    decision: Decision | None
    leaks_deleted: int


class Vmm:
    """The live VMM over one store, its clouds (name -> adapter) and the policy config."""

    def __init__(self, *, store: Store, clouds: Mapping[str, Cloud], config: Config, owner_id: str,
                 log: UsageLog, options: VmmOptions | None = None, image_version: str = "1",
                 timer: Callable[[], float] = time.perf_counter):
        missing = {c.name for c in config.clouds} - set(clouds)
        if missing:
            raise ValueError(f"clouds configured without an adapter: {sorted(missing)}")
        self.store, self.clouds, self.config, self.owner_id = store, dict(clouds), config, owner_id
        self.log, self.options, self.image_version = log, options or VmmOptions(), image_version
        self.memory = PolicyMemory()
        self._timer = timer
        self._samples: list[tuple[str, HealthSample, str | None]] = []
        self._last_load: float | None = None
        self.api_calls = 0

    # -- cloud calls, measured ------------------------------------------------------------------------
    def call(self, cloud: str, name: str, fn: Callable[[], T]) -> T:
        """Call a cloud, recording the outcome and latency as an API health sample (and errors in the log)."""
        self.api_calls += 1
        t0 = self._timer()
        try:
            out = fn()
        except CloudError as e:
            self._samples.append((cloud, HealthSample(self._now, "api", False, self._timer() - t0), name))
            self.log.emit(self._now, ev.API_ERROR, cloud=cloud, call=name, error=str(e), quota=e.quota)
            raise
        self._samples.append((cloud, HealthSample(self._now, "api", True, self._timer() - t0), name))
        return out

    def boot_sample(self, cloud: str, now: float, *, ok: bool, duration_s: float) -> None:
        self._samples.append((cloud, HealthSample(now, "boot", ok, max(0.0, duration_s)), None))

    def headroom(self) -> dict[str, int]:
        used: dict[str, int] = {}
        for (_, cloud, state), n in self.store.counts().items():
            if state != RECLAIMING:
                used[cloud] = used.get(cloud, 0) + n
        return {c.name: c.quota - used.get(c.name, 0) for c in self.config.clouds}

    # -- the pass -------------------------------------------------------------------------------------
    def run_pass(self, now: float) -> PassResult:
        self._now = now
        listed: dict[str, Sequence[CloudVm] | None] = {}
        for c in self.config.clouds:
            try:
                listed[c.name] = self.call(c.name, "list", self.clouds[c.name].list_vms)
            except CloudError:
                listed[c.name] = None  # unknown: reconcile nothing on this cloud this pass
        leaks = self.reconcile(now, listed)
        self._announce_requests(now)
        self._flush_samples()
        window = self.config.policy.health.window_s
        snap = build_snapshot(now, self.store.vms(), self.store.requests(state=PENDING),
                              self.store.samples(since=now - window), [c.name for c in self.config.clouds])
        # The policy's view of the clouds lives in the store: a restarted or newly elected VMM goes on
        # with the backoffs (and their lengths) where the last pass left them.
        saved = self.store.cloud_health()
        if saved != dict(self.memory.clouds):
            self.memory = replace(self.memory, clouds=saved)
        decision = decide(snap, self.config, self.memory)
        if dict(decision.memory.clouds) != saved:
            self.store.save_cloud_health(decision.memory.clouds)
        self.memory = decision.memory
        for ch in decision.health_changes:
            self.log.emit(now, ev.CLOUD_STATUS, cloud=ch.cloud, status=ch.status, verdict=ch.verdict,
                          backoff_s=ch.backoff_s)
        apply_actions(self, decision.actions, now)
        self._flush_samples()
        self._log_load(now)
        return PassResult(now, {k: (None if v is None else len(v)) for k, v in listed.items()}, decision, leaks)

    def reconcile(self, now: float, listed: Mapping[str, Sequence[CloudVm] | None]) -> int:
        """Bring the store in line with what the clouds listed; return how many leaked VMs were deleted."""
        rows = self.store.vms()
        leaks = 0
        for cloud, vms in listed.items():
            if vms is None:
                continue
            ours = [v for v in vms if v.tags.get(OWNER_TAG) == self.owner_id and v.state not in ABSENT]
            by_cloud_id = {v.id: v for v in ours}
            by_tag = {v.tags.get(VM_TAG): v for v in ours if v.tags.get(VM_TAG)}
            known: set[str] = set()
            for r in (r for r in rows if r.cloud == cloud):
                cvm = by_cloud_id.get(r.cloud_id) if r.cloud_id else by_tag.get(r.id)
                if cvm is not None:
                    known.add(cvm.id)
                self._reconcile_vm(r, cvm, now)
            unknown = [v.id for v in ours if v.id not in known]
            counts = self.store.sight_unknown(cloud, unknown, now=now)
            for cid, n in counts.items():
                if n >= self.options.leak_passes:
                    try:
                        self.call(cloud, "terminate", lambda c=cloud, i=cid: self.clouds[c].terminate(vm_id=i))
                    except CloudError:
                        continue
                    v = by_cloud_id[cid]
                    self.store.forget_candidate(cloud, cid)
                    self.log.emit(now, ev.TERMINATE, pool=v.tags.get("daaas-pool"), cloud=cloud,
                                  vm=v.tags.get(VM_TAG), reason="leak", state="unknown", cloud_id=cid)
                    leaks += 1
        return leaks

    def _reconcile_vm(self, r, cvm: CloudVm | None, now: float) -> None:
        store = self.store
        if r.state == REQUESTED:
            if cvm is not None:  # the launch went through before a crash: adopt it
                store.move(r.id, BOOTING, now=now, reason="adopted", cloud_id=cvm.id)
                r.state, r.cloud_id = BOOTING, cvm.id
            elif now - r.created_at > self.options.request_timeout_s:
                store.move(r.id, GONE, now=now, reason="launch_unconfirmed")
                return
            else:
                return
        if r.state == RECLAIMING:
            if cvm is None:
                if r.cloud_id is not None or now - r.created_at > self.options.request_timeout_s:
                    store.move(r.id, GONE, now=now, reason=r.reason or "terminated")
            else:
                if r.cloud_id is None:
                    store.update_vm(r.id, cloud_id=cvm.id)
                if r.terminate_sent_at is None and r.reason == "released":
                    # The portal released it (a store write only): the VMM logs it as it acts on it.
                    released_at = store.transitions(r.id)[-1].at  # the move to reclaiming
                    self.log.emit(released_at, ev.RELEASE, pool=r.pool, cloud=r.cloud, vm=r.id, user=r.owner)
                    self.log.emit(now, ev.TERMINATE, pool=r.pool, cloud=r.cloud, vm=r.id, user=r.owner,
                                  reason="released", state=ALLOCATED)
                if r.terminate_sent_at is None or now - r.terminate_sent_at >= self.options.terminate_retry_s:
                    try:
                        self.call(r.cloud, "terminate", lambda: self.clouds[r.cloud].terminate(vm_id=cvm.id))
                        store.update_vm(r.id, terminate_sent_at=now)
                    except CloudError:
                        pass
            return
        if cvm is None:  # the cloud lost it (an outage, someone deleted it)
            if store.move(r.id, GONE, now=now, reason="missing"):
                if r.state == BOOTING:
                    self.boot_sample(r.cloud, now, ok=False, duration_s=now - r.created_at)
                    self.log.emit(now, ev.BOOT_FAILED, pool=r.pool, cloud=r.cloud, vm=r.id, reason="missing")
                self.log.emit(now, ev.GONE, pool=r.pool, cloud=r.cloud, vm=r.id, user=r.owner, state=r.state)
            return
        if r.state == BOOTING:
            if cvm.state == CloudVmState.RUNNING:
                if store.move(r.id, READY, now=now, reason="running", ready_at=now):
                    self.boot_sample(r.cloud, now, ok=True, duration_s=now - r.created_at)
                    self.log.emit(now, ev.READY, pool=r.pool, cloud=r.cloud, vm=r.id, boot_s=now - r.created_at)
            elif cvm.state == CloudVmState.ERROR:
                self.boot_sample(r.cloud, now, ok=False, duration_s=now - r.created_at)
                self.log.emit(now, ev.BOOT_FAILED, pool=r.pool, cloud=r.cloud, vm=r.id, reason="error")
                terminate(self, r.id, "boot_failed", now)
        elif r.state in (READY, ALLOCATED) and cvm.state == CloudVmState.ERROR:
            terminate(self, r.id, "error", now)

    def _announce_requests(self, now: float) -> None:
        fresh = [q for q in self.store.requests(state=PENDING) if not q.announced]
        for q in fresh:
            self.log.emit(q.requested_at, ev.REQUEST, pool=q.pool, user=q.user, request=q.id, location=q.location)
        self.store.mark_announced([q.id for q in fresh])

    def _flush_samples(self) -> None:
        self.store.add_samples(self._samples)
        self._samples = []

    def _log_load(self, now: float) -> None:
        if self._last_load is not None and now - self._last_load < self.options.load_every_s:
            return
        self._last_load = now
        # Health older than the policy's window is never read again: keep the table small.
        self.store.forget_samples(before=now - 2 * self.config.policy.health.window_s)
        counts = self.store.counts()
        for pool in self.config.pools:
            for cloud in self.config.clouds:
                def n(*states, p=pool.name, c=cloud.name):
                    return sum(counts.get((p, c, s), 0) for s in states)
                self.log.emit(now, ev.LOAD, pool=pool.name, cloud=cloud.name, ready=n(READY),
                              booting=n(REQUESTED, BOOTING), allocated=n(ALLOCATED), abandoned=0,
                              reclaiming=n(RECLAIMING))
