"""The twin: demand, simulated clouds and a controller that runs the real policy, on SimPy.

The controller is the twin's shell around `core.policy.decide`: it keeps the VMs' records, builds
a `Snapshot`, calls the policy, applies its actions through the `SimCloud` adapters and writes every
event in the shared schema. It runs every `policy.period_s` and, coalesced, on events (a request, a
boot finished or failed, a VM lost, a release).
"""
from __future__ import annotations

import gc
import math
import random
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import simpy
from simpy.events import EventPriority

from core import events as ev
from core.actions import Assign, Drain, Launch, Terminate, Warn
from core.config import Config
from core.events import Event
from core.placement import rank_clouds
from core.policy import Decision, PolicyMemory, decide, launchable_clouds
from core.ports import POOL_TAG, VM_TAG, CloudError
from core.schedule import cloud_wakeup, known_due_times, next_wakeup, surplus_due, vm_wakeup
from core.snapshot import CloudObservation, HealthSample, Request, Snapshot, Vm, VmState
from twin.cloud import SimCloud
from twin.demand import Arrival, arrivals
from twin.scenario import Scenario

BUSY_CPU = 95.0
IDLE_CPU = 1.0
TICK_PRIORITY = EventPriority(2)  # after SimPy's URGENT (0) and NORMAL (1) events at the same instant


# A run allocates hundreds of thousands of records that live to its end (the event log above all:
# about a million events a simulated year) and next to no reference cycles (a year of the bench's
# scenario leaves a few hundred cyclic objects). CPython's collector, at its default thresholds,
# scans the young records every 700 allocations and the whole heap each time it grows by a quarter:
# an eighth of a year's run went to finding nothing. During a run it collects far less often; the
# rare cycles still go, and the caller's thresholds come back when the run ends.
RUN_GC_THRESHOLDS = (100_000, 50, 1_000)


@contextmanager
def _rare_collections() -> Iterator[None]:
    """Raise the cyclic collector's thresholds (never lower them) for the duration of a run."""
    before = gc.get_threshold()
    gc.set_threshold(*(max(a, b) for a, b in zip(before, RUN_GC_THRESHOLDS, strict=True)))
    try:
        yield
    finally:
        gc.set_threshold(*before)


class _VmRec:
    """The controller's mutable record of one VM; `vm` caches its frozen policy view."""

    __slots__ = ("id", "cloud_id", "pool", "cloud", "state", "created_at", "ready_at", "owner", "request",
                 "allocated_at", "last_input_at", "last_busy_at", "cpu", "warned_at", "drained", "present",
                 "session_gen", "arrival", "_vm", "_dirty")

    def __init__(self, vm_id: str, pool: str, cloud: str, now: float, dirty: set[_VmRec]):
        self.id, self.pool, self.cloud = vm_id, pool, cloud
        self.cloud_id: str = ""  # the cloud's id for it, set when the launch returns
        self.state = VmState.BOOTING
        self.created_at = now
        self.ready_at: float | None = None
        self.owner: str | None = None
        self.request: str | None = None
        self.allocated_at: float | None = None
        self.last_input_at: float | None = None
        self.last_busy_at: float | None = None
        self.warned_at: float | None = None
        self.cpu = IDLE_CPU
        self.drained = False
        self.present = False  # the user is at the keyboard
        self.session_gen = 0  # invalidates scheduled session steps of a previous owner
        self.arrival: Arrival | None = None
        self._vm: Vm | None = None
        self._dirty = dirty  # the twin's set of records whose policy view must be rebuilt
        dirty.add(self)

    def touch(self) -> None:
        self._vm = None
        self._dirty.add(self)

    @property
    def vm(self) -> Vm:
        if self._vm is None:
            # Positional, in Vm's field order (a view is built at every change: keywords cost more).
            self._vm = Vm(self.id, self.pool, self.cloud, self.state, self.created_at, self.ready_at, self.owner,
                          self.allocated_at, self.last_input_at, self.last_busy_at, self.cpu, 0.0, self.warned_at,
                          self.drained)
        return self._vm


@dataclass(frozen=True)
class _Pending:
    request: Request
    arrival: Arrival


class Twin:
    """One scenario's world: build with `build_twin`, then `run()`."""

    def __init__(self, scenario: Scenario, *, config: Config | None = None,
                 sizer: Callable[[Snapshot], dict[str, int] | None] | None = None,
                 progress: Callable[[float], None] | None = None, skip_idle_passes: bool = True,
                 env: simpy.Environment | None = None, arrivals: Mapping[str, Iterable[Arrival]] | None = None):
        self.scenario = scenario
        self.config = config or scenario.config
        self.env = env if env is not None else simpy.Environment()
        self.events: list[Event] = []
        self._sizer = sizer
        self._progress = progress
        # Pools whose demand comes from elsewhere (a trace replay) instead of the generator.
        self._given_arrivals = dict(arrivals or {})
        master = random.Random(scenario.seed)
        self._demand_seeds = {p.name: master.getrandbits(64) for p in self.config.pools}
        self.clouds: dict[str, SimCloud] = {}
        for spec in scenario.clouds:
            rng = random.Random(master.getrandbits(64))
            self.clouds[spec.name] = SimCloud(self.env, spec, rng, listener=self._listener(spec.name))
        self._costs = {c.name: c.cost_per_vm_hour for c in self.config.clouds}
        self._regions = {c.name: c.region for c in self.config.clouds}
        self._pools = {p.name: p for p in self.config.pools}
        self._vms: dict[str, _VmRec] = {}
        self._views: dict[str, Vm] = {}  # each live VM's current policy view, in launch order
        self._dirty: set[_VmRec] = set()
        self._by_cloud_id: dict[str, _VmRec] = {}
        self._pending: dict[str, _Pending] = {}
        self._samples: dict[str, deque[HealthSample]] = {c: deque() for c in self.clouds}
        # What the last snapshot held, kept until it changes: most passes follow one request or boot,
        # so most clouds' samples and the requests are as they were.
        self._observed: dict[str, CloudObservation] = {}  # cloud -> its observation, while unchanged
        self._requests: tuple[Request, ...] | None = None  # the pending requests, while unchanged
        self._memory = PolicyMemory()
        self._pass_scheduled = False
        self._skip = skip_idle_passes
        self._next_due = 0.0
        self._tick_at = math.inf  # the pending periodic tick's time (inf: none)
        self._tick_token = 0  # identifies the pending tick; older ones are stale
        self._last_tick = -math.inf
        self._forced = True  # a pass is due whatever the rules say (the first one; a failure to judge; ...)
        self._last_pass = 0.0
        self._unjudged_failure = False
        self._surplus: set[str] | None = None
        self._capped: set[str] = set()  # pools whose last launches were cut short by max_total
        self._ids = 0
        self.passes = 0

    # ---- running -------------------------------------------------------------------------------
    def run(self) -> list[Event]:
        """Simulate the whole scenario; return its events (also kept in `self.events`)."""
        sc = self.scenario
        self._emit(ev.RUN, details={
            "scenario": sc.name, "seed": sc.seed, "start": 0.0, "end": sc.duration_s, "time_base": "sim",
            "clouds": {c.name: {"cost_per_hour": c.cost_per_vm_hour, "region": c.region}
                       for c in self.config.clouds},
            "pools": [p.name for p in self.config.pools],
            "maintenance": {c.name: [[w.start, w.end] for w in c.maintenance] for c in self.config.clouds
                            if c.maintenance}})
        for stream in self.demand_streams().values():
            self.env.process(self._arrive(stream))
        for c in self.config.clouds:
            for w in c.maintenance:
                self._at(w.start, partial(self._emit, ev.MAINTENANCE_START, cloud=c.name, details={"end": w.end}))
                self._at(w.end, partial(self._emit, ev.MAINTENANCE_END, cloud=c.name))
        self._schedule_tick(0.0)
        self.env.process(self._heartbeat())
        if self._progress:
            self.env.process(self._report_progress(self._progress))
        with _rare_collections():
            self.env.run(until=sc.duration_s)
        return self.events

    def demand_streams(self) -> dict[str, Iterable[Arrival]]:
        """Each pool's arrivals as this twin will replay them: given ones (a trace), else the generator's."""
        sc, out = self.scenario, {}
        for pool in self.config.pools:
            if pool.name in self._given_arrivals:
                out[pool.name] = self._given_arrivals[pool.name]
                continue
            rng = random.Random(self._demand_seeds[pool.name])
            out[pool.name] = arrivals(pool.name, sc.demand[pool.name], rng, duration_s=sc.duration_s,
                                      start_weekday=sc.start_weekday)
        return out

    def set_sizer(self, sizer: Callable[[Snapshot], dict[str, int] | None] | None) -> None:
        """Install the reserve sizer (before `run`); one with `next_change(now)` also sets pass wakeups."""
        self._sizer = sizer

    def launch_at(self, t: float, pool: str, reason: str = "oracle") -> None:
        """Launch one VM of `pool` at time `t` outside the policy (the clairvoyant oracle's launches),
        on the best launchable cloud then, failing over like policy launches."""
        def go() -> None:
            usable = launchable_clouds(self.config, self._memory, self.env.now)
            ranked = rank_clouds(self._pools[pool], self.config, usable)
            if ranked:
                self._launch(Launch(pool=pool, cloud=ranked[0].name, reason=reason), set())
        self._at(t, go)

    def emit(self, kind: str, **fields) -> None:
        """Log an event from outside the controller (e.g. the predictive sizer's policy notes)."""
        self._emit(kind, **fields)

    def _arrive(self, stream: Iterable[Arrival]) -> Generator[simpy.Event, object, None]:
        env = self.env
        for a in stream:
            yield env.timeout(a.t - env.now)
            self._request(a)

    # ---- the periodic tick ----------------------------------------------------------------------
    # The controller's period makes a grid of ticks (0, period, 2 x period, ...). A tick runs after
    # every other event at its instant (TICK_PRIORITY), so a periodic pass sees all that happened then.
    # A tick before the policy's next wakeup would decide nothing, so none is scheduled (unless
    # `skip_idle_passes` is off, which tests use to show the results are identical): the twin sleeps
    # to the tick of its next due time, and brings that tick forward when something makes a rule due
    # sooner. The wakeup only ever moves earlier between passes (a VM that changed may have a rule due
    # sooner), so when its tick comes the rules are asked again about the VMs as they are now: a due
    # time that belonged to a VM since changed (a boot judged slow that finished in time, an idle VM
    # whose user came back) needs no pass.

    def _due(self, t: float) -> None:
        """A pass is due at `t` (or earlier, if one already was): make sure a tick comes then."""
        if t < self._next_due:
            self._next_due = t
        self._schedule_tick(self._next_due)

    def _schedule_tick(self, due: float) -> None:
        """Schedule the first tick at or after `due` not yet run, unless one at or before it is pending."""
        if due == math.inf:
            return  # nothing is due: the next event that makes something due schedules its tick
        period = self.config.policy.period_s
        t = max(math.ceil(due / period) * period, self._last_tick + period)
        if t >= self._tick_at:
            return
        self._tick_at = t
        self._tick_token += 1
        tick = simpy.Event(self.env)
        tick._ok, tick._value = True, None  # a plain event that fires at `t`, as a Timeout would
        tick.callbacks.append(partial(self._on_tick, self._tick_token))
        self.env.schedule(tick, TICK_PRIORITY, t - self.env.now)

    def _on_tick(self, token: int, _event: simpy.Event) -> None:
        if token != self._tick_token:
            return  # superseded: an earlier tick was scheduled, which has scheduled its own successor
        now = self.env.now
        self._tick_at, self._last_tick = math.inf, now
        if not self._skip:
            self._pass()
            self._schedule_tick(now)
            return
        if now >= self._next_due:
            if self._forced:
                self._pass()
            else:
                self._next_due = self._recheck()
                if now >= self._next_due:
                    self._pass()
        self._schedule_tick(self._next_due)

    def _heartbeat(self) -> Generator[simpy.Event, object, None]:
        # The VM agent reports user input periodically, as it would live. A report the policy cannot
        # tell from the last one before the next beat is not delivered (with `skip_idle_passes`):
        # input matters only through the VM's rule due times (core.schedule.known_due_times), so a VM is
        # refreshed when one of them, as its last delivered input sets them, falls before the next
        # beat. Refreshing every VM every beat made most VMs a pass looked at new ones; the results
        # are identical (tests/twin/test_determinism.py runs with `skip_idle_passes=False` too, which
        # delivers every beat).
        beat = self.scenario.agent_heartbeat_s
        while True:
            yield self.env.timeout(beat)
            now = self.env.now
            for rec in self._vms.values():
                if rec.present and (not self._skip or self._due_by(rec, now + beat)):
                    rec.last_input_at = now
                    rec.touch()

    def _due_by(self, rec: _VmRec, t: float) -> bool:
        """Whether a rule of the VM's current policy view falls due at or before `t`."""
        times = known_due_times(rec.vm, self._pools, self.config, self._memory.vm_dues)
        return bool(times) and times[0] <= t

    def _report_progress(self, progress: Callable[[float], None]) -> Generator[simpy.Event, object, None]:
        step = max(self.scenario.duration_s / 200, 1.0)
        while True:
            progress(self.env.now)
            yield self.env.timeout(step)

    # ---- the policy pass -----------------------------------------------------------------------
    def _poke(self) -> None:
        """Ask for a pass at the current instant; several pokes at one instant make one pass."""
        if not self._pass_scheduled:
            self._pass_scheduled = True
            self._at(self.env.now, self._pass)

    def snapshot(self, *, evidence_since: float | None = None) -> Snapshot:
        """The policy's view now; `evidence_since`: keep health samples still in the window at that
        earlier time (a re-check needs the evidence that has aged out since the last pass)."""
        obs = self._observations(self.env.now if evidence_since is None else evidence_since)
        if self._dirty:
            views = self._views
            for rec in self._dirty:
                if rec.id in views:  # set order does not matter: only existing entries are updated
                    views[rec.id] = rec.vm
            self._dirty.clear()
        if self._requests is None:
            self._requests = tuple(p.request for p in self._pending.values())
        return Snapshot(now=self.env.now, vms=tuple(self._views.values()), requests=self._requests, clouds=obs)

    def _observations(self, at: float) -> tuple[CloudObservation, ...]:
        """Each cloud's health samples still in the window at `at`."""
        horizon = at - self.config.policy.health.window_s
        observed = self._observed
        for name, samples in self._samples.items():
            if samples and samples[0].at < horizon:
                while samples and samples[0].at < horizon:
                    samples.popleft()
                observed.pop(name, None)
        return tuple(observed.get(name) or observed.setdefault(name, CloudObservation(name, tuple(samples)))
                     for name, samples in self._samples.items())

    def _pass(self) -> None:
        # A pass made for an event (a request, a boot), with no rule due yet, changes only the VMs its
        # actions touch: the wakeup follows from the one it had and theirs (see _wakeup_after_actions).
        for_event = not self._forced and self._next_due > self.env.now and self._surplus is not None
        surplus_before = self._surplus
        self._pass_scheduled = False
        self._forced = False
        self._unjudged_failure = False  # this pass's snapshot carries every failure so far
        self.passes += 1
        snap = self.snapshot()
        self._last_pass = snap.now
        targets = self._sizer(snap) if self._sizer else None
        locations = getattr(self._sizer, "locations", None)  # where a forecast says demand comes from
        decision = decide(snap, self.config, self._memory, targets=targets, locations=locations)
        self._memory = decision.memory
        self._apply(decision)
        self._surplus = {n.pool for n in decision.needs if n.available > n.target}
        self._capped = {n.pool for n in decision.needs if n.launch < n.target - n.available}
        if self._skip:
            if for_event and surplus_before is not None:
                self._next_due = self._wakeup_after_actions(surplus_before)
            else:
                self._next_due = self._wakeup(self.snapshot() if decision.actions else snap)
            # A sizer whose targets change with time (a forecast per hour) needs a pass when they do.
            change = getattr(self._sizer, "next_change", None)
            if change is not None:
                self._next_due = min(self._next_due, change(snap.now))
            if self._unjudged_failure:  # a call failed while applying the actions: judge it next tick
                self._force_pass()
            self._schedule_tick(self._next_due)

    def _wakeup(self, snap: Snapshot, after: float | None = None) -> float:
        return next_wakeup(snap, self.config, self._memory.clouds, self._surplus, after=after,
                           dues=self._memory.vm_dues)

    def _wakeup_after_actions(self, surplus_before: set[str]) -> float:
        """The wakeup after an event's pass: the one before it, or sooner for what the pass changed.

        The wakeup before the pass was no later than any VM's next due time (it only moves earlier
        between passes), so only the VMs the actions touched, the pools that became surplus and the
        clouds (the pass updated their health and samples) can bring it forward. A VM the actions
        removed may leave it early: the tick then re-checks and finds nothing due (see _on_tick).
        """
        now, surplus = self.env.now, self._surplus or set()
        t = self._next_due
        for rec in self._dirty:  # the records the actions changed or launched (the pass's snapshot took the rest)
            if rec.id in self._vms:
                t = min(t, vm_wakeup(rec.vm, self._pools[rec.pool], self.config, now=now, after=now,
                                     surplus=rec.pool in surplus))
        grown = surplus - surplus_before
        if grown:  # their ready VMs may now be trimmed as surplus with time
            for view in self._views.values():
                if view.pool in grown:
                    due = surplus_due(view)
                    if now < due < t:
                        t = due
        return min(t, cloud_wakeup(self._observations(now), self.config, self._memory.clouds, after=now))

    def _recheck(self) -> float:
        """The policy's wakeup for the VMs as they are now: its earliest rule due since the last pass."""
        t = self._wakeup(self.snapshot(evidence_since=self._last_pass), after=self._last_pass)
        change = getattr(self._sizer, "next_change", None)
        return t if change is None else min(t, change(self._last_pass))

    def _force_pass(self) -> None:
        """Make the next periodic pass run whatever the rules' due times say."""
        self._forced = True
        self._due(self.env.now)

    def _apply(self, d: Decision) -> None:
        for change in d.health_changes:
            self._emit(ev.CLOUD_STATUS, cloud=change.cloud, details={
                "status": change.status, "verdict": change.verdict, "backoff_s": change.backoff_s})
        tried: set[str] = set()
        for a in d.actions:
            if isinstance(a, Assign):
                self._assign(a)
            elif isinstance(a, Launch):
                self._launch(a, tried)
            elif isinstance(a, Terminate):
                self._terminate(a.vm, a.reason)
            elif isinstance(a, Warn):
                self._warn(a)
            elif isinstance(a, Drain):
                self._drain(a)

    # ---- applying actions ------------------------------------------------------------------------
    def _launch(self, a: Launch, refused: set[str]) -> None:
        """Launch on the chosen cloud; if it refuses, fail over to the next launchable one."""
        if self._try_launch(a, a.cloud):
            return
        refused.add(a.cloud)
        if a.probe:
            return
        # The failover order is worked out only when needed: nearly every launch succeeds first time.
        usable = launchable_clouds(self.config, self._memory, self.env.now) - {a.cloud}
        for c in rank_clouds(self.config.pool(a.pool), self.config, usable):
            if c.name in refused:
                continue
            if self._try_launch(a, c.name):
                return
            refused.add(c.name)

    def _try_launch(self, a: Launch, cloud: str) -> bool:
        now = self.env.now
        self._ids += 1
        vm_id = f"vm{self._ids}"
        try:
            cloud_id = self.clouds[cloud].launch(pool=a.pool, tags={VM_TAG: vm_id, POOL_TAG: a.pool})
        except CloudError as e:
            self._sample(cloud, "api", False)
            self._emit(ev.LAUNCH_FAILED, pool=a.pool, cloud=cloud, vm=vm_id,
                       details={"error": str(e), "quota": e.quota})
            return False
        self._sample(cloud, "api", True)
        rec = _VmRec(vm_id, a.pool, cloud, now, self._dirty)
        rec.cloud_id = cloud_id
        self._vms[vm_id] = rec
        self._views[vm_id] = rec.vm  # its place in snapshots: launch order, whatever set order does
        self._by_cloud_id[cloud_id] = rec
        self._emit(ev.LAUNCH, pool=a.pool, cloud=cloud, vm=vm_id, details={
            "reason": a.reason, "probe": a.probe, "cost_per_hour": self._costs[cloud],
            "region": self._regions[cloud]})
        return True

    def _assign(self, a: Assign) -> None:
        now = self.env.now
        pending = self._pending.pop(a.request)
        self._requests = None
        rec = self._vms[a.vm]
        rec.state, rec.owner, rec.request, rec.allocated_at = VmState.ALLOCATED, a.user, a.request, now
        rec.present, rec.last_input_at, rec.warned_at = True, now, None
        rec.session_gen += 1
        rec.arrival = pending.arrival
        rec.touch()
        self._emit(ev.ASSIGN, pool=rec.pool, cloud=rec.cloud, vm=rec.id, user=a.user,
                   details={"wait_s": now - pending.request.requested_at, "request": a.request})
        arrival, gen = pending.arrival, rec.session_gen
        self._at(now + arrival.session_s, lambda: self._session_ends(rec, arrival, gen))

    def _session_ends(self, rec: _VmRec, arrival: Arrival, gen: int) -> None:
        if rec.session_gen != gen or rec.state != VmState.ALLOCATED:
            return  # reclaimed, drained or lost before the user was done
        now = self.env.now
        if not arrival.abandons:
            self._emit(ev.RELEASE, pool=rec.pool, cloud=rec.cloud, vm=rec.id, user=rec.owner)
            self._terminate(rec.id, "released")
            if rec.pool in self._capped:
                # The pool was at max_total with a deficit: the VM given back makes room for a launch.
                self._force_pass()
            self._poke_if_waiting()
            return
        rec.present, rec.last_input_at = False, now
        if arrival.busy_s > 0:
            rec.cpu, rec.last_busy_at = BUSY_CPU, now
            self._at(now + arrival.busy_s, lambda: self._computation_ends(rec, gen))
        rec.touch()
        self._changed(rec)
        self._emit(ev.ABANDON, pool=rec.pool, cloud=rec.cloud, vm=rec.id, user=rec.owner,
                   details={"busy_s": arrival.busy_s})

    def _computation_ends(self, rec: _VmRec, gen: int) -> None:
        if rec.session_gen == gen and rec.state == VmState.ALLOCATED:
            rec.cpu, rec.last_busy_at = IDLE_CPU, self.env.now
            rec.touch()
            self._changed(rec)

    def _terminate(self, vm_id: str, reason: str) -> None:
        rec = self._vms.get(vm_id)
        if rec is None:
            return
        try:
            self.clouds[rec.cloud].terminate(vm_id=rec.cloud_id)
        except CloudError as e:
            # The VM stays in the record; the policy will ask again on a later pass.
            self._sample(rec.cloud, "api", False)
            self._emit(ev.API_ERROR, cloud=rec.cloud, vm=rec.id, details={"call": "terminate", "error": str(e)})
            return
        self._sample(rec.cloud, "api", True)
        self._forget(rec)
        self._emit(ev.TERMINATE, pool=rec.pool, cloud=rec.cloud, vm=rec.id, user=rec.owner,
                   details={"reason": reason, "state": rec.state.value})
        if rec.state == VmState.ALLOCATED and reason in ("maintenance", "max_age"):
            pass  # the user was warned or drained; they may come back with a new request later

    def _warn(self, a: Warn) -> None:
        rec = self._vms[a.vm]
        rec.warned_at = self.env.now
        rec.touch()
        self._emit(ev.WARN, pool=rec.pool, cloud=rec.cloud, vm=rec.id, user=rec.owner,
                   details={"reason": a.reason, "reclaim_at": a.reclaim_at})

    def _drain(self, a: Drain) -> None:
        rec = self._vms[a.vm]
        rec.drained = True
        rec.touch()
        self._emit(ev.DRAIN, pool=rec.pool, cloud=rec.cloud, vm=rec.id, user=rec.owner, details={"at": a.at})

    # ---- what users and clouds do ----------------------------------------------------------------
    def _request(self, a: Arrival) -> None:
        now = self.env.now
        self._ids += 1
        req = Request(id=f"r{self._ids}", pool=a.pool, user=a.user, requested_at=now, location=a.location)
        self._pending[req.id] = _Pending(req, a)
        self._requests = None
        self._emit(ev.REQUEST, pool=a.pool, user=a.user, details={"location": a.location, "request": req.id})
        self._poke()

    def _listener(self, cloud: str) -> Callable[[str, str | None], None]:
        def heard(kind: str, cloud_id: str | None) -> None:
            if kind == "down":
                self._emit(ev.CLOUD_DOWN, cloud=cloud, details={"mode": self.clouds[cloud].mode})
                return
            if kind == "up":
                self._emit(ev.CLOUD_UP, cloud=cloud)
                return
            rec = self._by_cloud_id.get(cloud_id) if cloud_id is not None else None
            if rec is None:
                return
            now = self.env.now
            if kind == "running":
                rec.state, rec.ready_at = VmState.READY, now
                rec.touch()
                self._sample(cloud, "boot", True, now - rec.created_at)
                self._emit(ev.READY, pool=rec.pool, cloud=cloud, vm=rec.id,
                           details={"boot_s": now - rec.created_at})
                self._changed(rec)
                self._poke_if_waiting()
                return
            elif kind == "boot_failed":
                self._sample(cloud, "boot", False, now - rec.created_at)
                self._emit(ev.BOOT_FAILED, pool=rec.pool, cloud=cloud, vm=rec.id, details={"reason": "error"})
                self._forget(rec)
                try:
                    self.clouds[cloud].terminate(vm_id=rec.cloud_id)  # free its quota
                except CloudError:
                    pass
            elif kind == "lost":
                self._sample(cloud, "vm", False)
                self._emit(ev.GONE, pool=rec.pool, cloud=cloud, vm=rec.id, user=rec.owner,
                           details={"state": rec.state.value})
                self._forget(rec)
                a = rec.arrival
                if rec.state == VmState.ALLOCATED and rec.present and a is not None:
                    # The user lost their VM with its cloud: they ask again for the rest of their work.
                    left = max(60.0, a.session_s - (now - (rec.allocated_at or now)))
                    self._request(Arrival(now, a.pool, a.user, a.location, left, a.abandons, a.busy_s))
            self._poke()
        return heard

    def _poke_if_waiting(self) -> None:
        """A boot or a release matters now only to waiting users or a cloud on probation; the
        policy's other uses of them are time-driven and covered by its wakeup."""
        if self._pending or any(h.status != "ok" for h in self._memory.clouds.values()):
            self._poke()
        elif self._sizer is not None and getattr(self._sizer, "follows_vms", True):
            # A sizer's targets may follow the VMs in use (a forecast of the load): the next periodic
            # pass re-sizes, as it would if none were skipped.
            self._force_pass()

    def _changed(self, rec: _VmRec) -> None:
        """A VM changed outside a pass: bring the next wakeup forward if one of its rules is due sooner."""
        if rec.state is VmState.GONE or rec.id not in self._vms:
            return  # a VM gone only makes rules due later
        surplus = self._surplus is None or rec.pool in self._surplus
        t = vm_wakeup(rec.vm, self._pools[rec.pool], self.config, now=self.env.now, after=self.env.now,
                      surplus=surplus)
        self._due(t)

    # ---- bookkeeping -------------------------------------------------------------------------------
    def _forget(self, rec: _VmRec) -> None:
        self._vms.pop(rec.id, None)
        self._views.pop(rec.id, None)
        if rec.cloud_id:
            self._by_cloud_id.pop(rec.cloud_id, None)

    def _sample(self, cloud: str, kind: str, ok: bool, duration: float = 0.0) -> None:
        self._samples[cloud].append(HealthSample(self.env.now, kind, ok, duration))
        self._observed.pop(cloud, None)
        if not ok:
            # A failure may change the cloud's verdict, which the next periodic pass would judge: make it due.
            self._unjudged_failure = True
            self._force_pass()

    def _emit(self, kind: str, *, pool: str | None = None, cloud: str | None = None, vm: str | None = None,
              user: str | None = None, details: dict | None = None) -> None:
        # float(): SimPy's clock starts at the integer 0; events carry seconds as floats throughout.
        self.events.append(Event(float(self.env.now), kind, pool, cloud, vm, user, details or {}))

    def _at(self, t: float, fn: Callable[[], None]) -> None:
        e = self.env.timeout(max(0.0, t - self.env.now))
        e.callbacks.append(lambda _e: fn())


def build_twin(scenario: Scenario, **kwargs) -> Twin:
    """The one factory that wires a scenario's world (with its trace replay and predictive sizer, if any)."""
    if "trace" in scenario.extra and "arrivals" not in kwargs:
        from twin.trace import trace_arrivals
        kwargs["arrivals"] = trace_arrivals(scenario)
    twin = Twin(scenario, **kwargs)
    predictive = scenario.extra.get("policy.predictive")
    if predictive is not None and predictive.enabled and kwargs.get("sizer") is None:
        from twin.predictive import PredictiveSizer
        twin.set_sizer(PredictiveSizer(scenario, predictive, emit=twin.emit))
    return twin
