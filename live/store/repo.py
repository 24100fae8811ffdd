"""`Store`: every read and write the VMM and the portal make, each a short transaction.

The crash-safety rules live here. A launch is first written as intent (a `requested` row holding the
daaas id the cloud VM will be tagged with), so a crash between the cloud call and recording its
answer is repaired by the next reconcile. An allocation moves the request and the VM in one
transaction, guarded by conditional updates and the allocations' UNIQUE `active_vm`.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.health import CloudHealth
from core.snapshot import HealthSample, VmState
from live.store.models import (
    Allocation,
    CloudHealthRow,
    HealthSampleRow,
    LeakCandidate,
    RequestRow,
    Transition,
    UserRow,
    VmRow,
)

REQUESTED, BOOTING, READY = VmState.REQUESTED.value, VmState.BOOTING.value, VmState.READY.value
ALLOCATED, RECLAIMING, GONE = VmState.ALLOCATED.value, VmState.RECLAIMING.value, VmState.GONE.value

# The VM state machine: which state may follow which.
NEXT: dict[str, frozenset[str]] = {
    REQUESTED: frozenset({BOOTING, RECLAIMING, GONE}),
    BOOTING: frozenset({READY, RECLAIMING, GONE}),
    READY: frozenset({ALLOCATED, RECLAIMING, GONE}),
    ALLOCATED: frozenset({RECLAIMING, GONE}),
    RECLAIMING: frozenset({GONE}),
    GONE: frozenset(),
}

PENDING, ASSIGNED, RELEASED, ENDED, CANCELLED = "pending", "assigned", "released", "ended", "cancelled"


class StoreError(Exception):
    """A write the state machine or the data forbids (the message says which and why)."""


@dataclass(frozen=True)
class RequestView:
    id: str
    pool: str
    user: str
    location: str
    state: str
    requested_at: float
    vm_id: str | None
    cloud: str | None
    cloud_id: str | None
    assigned_at: float | None


class Store:
    """The store over one engine. Methods are short transactions; none holds a session open."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as s:
            yield s

    def close(self) -> None:
        self.engine.dispose()

    # -- VMs ----------------------------------------------------------------------------------------
    def intend_launch(self, *, pool: str, cloud: str, now: float, reason: str = "reserve",
                      probe: bool = False, vm_id: str | None = None) -> str:
        """Write a `requested` VM row (the intent) before the cloud is called; return its daaas id."""
        vm_id = vm_id or "vm-" + uuid.uuid4().hex[:16]
        with self.session() as s:
            s.add(VmRow(id=vm_id, pool=pool, cloud=cloud, state=REQUESTED, reason=reason, probe=probe,
                        created_at=now, cpu_percent=0.0, io_bytes_per_s=0.0, drained=False))
            s.flush()
            s.add(Transition(vm_id=vm_id, from_state=None, to_state=REQUESTED, at=now, reason=reason))
        return vm_id

    def vm(self, vm_id: str) -> VmRow | None:
        with self.session() as s:
            return s.get(VmRow, vm_id)

    def vms(self, *, include_gone: bool = False) -> list[VmRow]:
        with self.session() as s:
            q = select(VmRow)
            if not include_gone:
                q = q.where(VmRow.state != GONE)
            return list(s.scalars(q))

    def move(self, vm_id: str, to: str, *, now: float, reason: str | None = None, **fields) -> bool:
        """Move a VM to state `to` (recording the transition) and set `fields`; False if it is not
        in a state `to` may follow (e.g. already gone), so callers can repeat a step after a crash."""
        with self.session() as s:
            return self._move(s, vm_id, to, now=now, reason=reason, **fields)

    def _move(self, s: Session, vm_id: str, to: str, *, now: float, reason: str | None, **fields) -> bool:
        row = s.get(VmRow, vm_id, with_for_update=True)
        if row is None:
            raise StoreError(f"vm {vm_id}: unknown")
        if to != row.state and to not in NEXT[row.state]:
            return False
        if to in (RECLAIMING, GONE) and row.state == ALLOCATED:
            self._end_allocation(s, vm_id, now=now, reason=reason or to)
        if to == GONE:
            row.gone_at = now
            # A request assigned to a VM that vanished before it was released ends with it.
            for req in s.scalars(select(RequestRow).where(RequestRow.vm_id == vm_id, RequestRow.state == ASSIGNED)):
                req.state, req.ended_at = ENDED, now
        for k, v in fields.items():
            setattr(row, k, v)
        if to != row.state:
            s.add(Transition(vm_id=vm_id, from_state=row.state, to_state=to, at=now, reason=reason))
            row.state = to
            if reason is not None and to in (RECLAIMING, GONE):
                row.reason = reason
        return True

    def update_vm(self, vm_id: str, **fields) -> None:
        with self.session() as s:
            s.execute(update(VmRow).where(VmRow.id == vm_id).values(**fields))

    def transitions(self, vm_id: str | None = None) -> list[Transition]:
        with self.session() as s:
            q = select(Transition).order_by(Transition.id)
            if vm_id is not None:
                q = q.where(Transition.vm_id == vm_id)
            return list(s.scalars(q))

    # -- users, requests, allocations ----------------------------------------------------------------
    def create_request(self, *, pool: str, user: str, now: float, location: str = "home",
                       request_id: str | None = None) -> str:
        request_id = request_id or "req-" + uuid.uuid4().hex[:16]
        with self.session() as s:
            if s.get(UserRow, user) is None:
                s.add(UserRow(name=user, first_seen_at=now))
                s.flush()
            s.add(RequestRow(id=request_id, pool=pool, user=user, location=location, state=PENDING,
                             requested_at=now, announced=False))
        return request_id

    def request(self, request_id: str) -> RequestView | None:
        with self.session() as s:
            r = s.get(RequestRow, request_id)
            if r is None:
                return None
            vm = s.get(VmRow, r.vm_id) if r.vm_id else None
            return RequestView(r.id, r.pool, r.user, r.location, r.state, r.requested_at, r.vm_id,
                               vm.cloud if vm else None, vm.cloud_id if vm else None, r.assigned_at)

    def requests(self, *, state: str | None = None) -> list[RequestRow]:
        with self.session() as s:
            q = select(RequestRow)
            if state is not None:
                q = q.where(RequestRow.state == state)
            return list(s.scalars(q.order_by(RequestRow.requested_at, RequestRow.id)))

    def has_new_requests(self) -> bool:
        """Whether a pending request arrived that no pass has seen yet (one cheap query)."""
        with self.session() as s:
            return s.scalar(select(RequestRow.id).where(RequestRow.state == PENDING, RequestRow.announced.is_(False))
                            .limit(1)) is not None

    def mark_announced(self, request_ids: list[str]) -> None:
        if request_ids:
            with self.session() as s:
                s.execute(update(RequestRow).where(RequestRow.id.in_(request_ids)).values(announced=True))

    def allocate(self, *, vm_id: str, request_id: str, now: float) -> bool:
        """Give ready VM `vm_id` to pending request `request_id`: both move in one transaction.

        Returns False (and changes nothing) unless the VM is still ready and the request still
        pending; the UNIQUE `active_vm` refuses a second holder even if those checks were raced.
        """
        try:
            with self.session() as s:
                req = s.get(RequestRow, request_id, with_for_update=True)
                vm = s.get(VmRow, vm_id, with_for_update=True)
                if req is None or vm is None or req.state != PENDING or vm.state != READY or req.pool != vm.pool:
                    return False
                n = s.execute(update(VmRow).where(VmRow.id == vm_id, VmRow.state == READY)
                              .values(state=ALLOCATED, owner=req.user, allocated_at=now, warned_at=None,
                                      last_input_at=None, last_busy_at=None)).rowcount
                m = s.execute(update(RequestRow).where(RequestRow.id == request_id, RequestRow.state == PENDING)
                              .values(state=ASSIGNED, vm_id=vm_id, assigned_at=now)).rowcount
                if n != 1 or m != 1:
                    raise _Abort
                s.add(Allocation(request_id=request_id, vm_id=vm_id, active_vm=vm_id, user=req.user, at=now))
                s.add(Transition(vm_id=vm_id, from_state=READY, to_state=ALLOCATED, at=now,
                                 reason=f"request {request_id}"))
            return True
        except (_Abort, IntegrityError):
            return False

    def release(self, request_id: str, *, now: float) -> bool:
        """The user gives the VM back: the allocation ends and the VM goes to be reclaimed."""
        with self.session() as s:
            req = s.get(RequestRow, request_id, with_for_update=True)
            if req is None:
                raise StoreError(f"request {request_id}: unknown")
            if req.state == PENDING:
                req.state, req.ended_at = CANCELLED, now
                return True
            if req.state != ASSIGNED:
                return False
            req.state, req.ended_at = RELEASED, now
            self._move(s, req.vm_id, RECLAIMING, now=now, reason="released")
            return True

    def _end_allocation(self, s: Session, vm_id: str, *, now: float, reason: str) -> None:
        for alloc in s.scalars(select(Allocation).where(Allocation.active_vm == vm_id)):
            alloc.active_vm, alloc.ended_at, alloc.end_reason = None, now, reason
            req = s.get(RequestRow, alloc.request_id)
            if req is not None and req.state == ASSIGNED:
                req.state, req.ended_at = ENDED, now

    def allocations(self) -> list[Allocation]:
        with self.session() as s:
            return list(s.scalars(select(Allocation).order_by(Allocation.id)))

    def heartbeat(self, vm_id: str, *, now: float, cpu_percent: float, io_bytes_per_s: float,
                  last_input_at: float | None, busy: bool) -> bool:
        """An agent's report from an allocated or ready VM. False if the VM is unknown or gone."""
        with self.session() as s:
            row = s.get(VmRow, vm_id, with_for_update=True)
            if row is None or row.state == GONE:
                return False
            row.cpu_percent, row.io_bytes_per_s = cpu_percent, io_bytes_per_s
            if last_input_at is not None and (row.last_input_at is None or last_input_at > row.last_input_at):
                row.last_input_at = last_input_at
            if busy:
                row.last_busy_at = now
            return True

    # -- cloud health -------------------------------------------------------------------------------
    def add_samples(self, samples: Iterable[tuple[str, HealthSample, str | None]]) -> None:
        rows = [HealthSampleRow(cloud=c, at=h.at, kind=h.kind, ok=h.ok, duration_s=h.duration_s, call=call)
                for c, h, call in samples]
        if rows:
            with self.session() as s:
                s.add_all(rows)

    def samples(self, *, since: float) -> dict[str, list[HealthSample]]:
        out: dict[str, list[HealthSample]] = {}
        with self.session() as s:
            for r in s.scalars(select(HealthSampleRow).where(HealthSampleRow.at >= since)
                               .order_by(HealthSampleRow.at)):
                out.setdefault(r.cloud, []).append(HealthSample(r.at, r.kind, r.ok, r.duration_s))
        return out

    def forget_samples(self, *, before: float) -> None:
        with self.session() as s:
            s.execute(delete(HealthSampleRow).where(HealthSampleRow.at < before))

    def cloud_health(self) -> dict[str, CloudHealth]:
        """The policy's last saved view of each cloud."""
        with self.session() as s:
            return {r.cloud: CloudHealth(r.status, _float(r.since), r.backoff_s, _float(r.until), r.probe_sent,
                                         r.verdict, _float(r.probe_at))
                    for r in s.scalars(select(CloudHealthRow))}

    def save_cloud_health(self, health: Mapping[str, CloudHealth]) -> None:
        """Replace the saved view with `health` (clouds no longer configured are dropped)."""
        with self.session() as s:
            s.execute(delete(CloudHealthRow).where(CloudHealthRow.cloud.not_in(list(health))))
            for cloud, h in health.items():
                s.merge(CloudHealthRow(cloud=cloud, status=h.status, since=_null(h.since), backoff_s=h.backoff_s,
                                       until=_null(h.until), probe_sent=h.probe_sent, verdict=h.verdict,
                                       probe_at=_null(h.probe_at)))

    # -- leak candidates ----------------------------------------------------------------------------
    def sight_unknown(self, cloud: str, seen: Iterable[str], *, now: float) -> dict[str, int]:
        """Record one pass's sightings of unknown tagged VMs on `cloud`; return each one's pass count.
        Candidates not seen this pass are forgotten (they went away, or became known)."""
        seen = set(seen)
        out: dict[str, int] = {}
        with self.session() as s:
            rows = {r.cloud_id: r for r in s.scalars(select(LeakCandidate).where(LeakCandidate.cloud == cloud))}
            for cid, r in rows.items():
                if cid not in seen:
                    s.delete(r)
            for cid in seen:
                r = rows.get(cid)
                if r is None:
                    s.add(LeakCandidate(cloud=cloud, cloud_id=cid, first_seen_at=now, passes=1))
                    out[cid] = 1
                else:
                    r.passes += 1
                    out[cid] = r.passes
        return out

    def forget_candidate(self, cloud: str, cloud_id: str) -> None:
        with self.session() as s:
            s.execute(delete(LeakCandidate).where(LeakCandidate.cloud == cloud, LeakCandidate.cloud_id == cloud_id))

    def counts(self) -> dict[tuple[str, str, str], int]:
        """(pool, cloud, state) -> number of VMs not gone."""
        with self.session() as s:
            rows = s.execute(select(VmRow.pool, VmRow.cloud, VmRow.state, func.count())
                             .where(VmRow.state != GONE).group_by(VmRow.pool, VmRow.cloud, VmRow.state))
            return {(p, c, st): n for p, c, st, n in rows}


def _null(t: float) -> float | None:
    return None if t == float("-inf") else t  # "never" is NULL: not every database takes -Infinity


def _float(t: float | None) -> float:
    return float("-inf") if t is None else t


class _Abort(Exception):
    pass
