"""Build the core's `Snapshot` from the store: VMs not gone, pending requests, recent health samples."""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from core.snapshot import CloudObservation, HealthSample, Request, Snapshot, Vm, VmState
from live.store.models import RequestRow, VmRow


def vm_from_row(r: VmRow) -> Vm:
    return Vm(id=r.id, pool=r.pool, cloud=r.cloud, state=VmState(r.state), created_at=r.created_at,
              ready_at=r.ready_at, owner=r.owner, allocated_at=r.allocated_at, last_input_at=r.last_input_at,
              last_busy_at=r.last_busy_at, cpu_percent=r.cpu_percent or 0.0,
              io_bytes_per_s=r.io_bytes_per_s or 0.0, warned_at=r.warned_at, drained=bool(r.drained))


def build_snapshot(now: float, vms: Iterable[VmRow], requests: Iterable[RequestRow],
                   samples: Mapping[str, Sequence[HealthSample]], clouds: Sequence[str]) -> Snapshot:
    """The policy's view at `now`. Reclaiming VMs are included (sizing must not count them as live)."""
    return Snapshot(
        now=now,
        vms=tuple(vm_from_row(r) for r in vms if r.state != VmState.GONE.value),
        requests=tuple(Request(id=q.id, pool=q.pool, user=q.user, requested_at=q.requested_at,
                               location=q.location or "home") for q in requests),
        clouds=tuple(CloudObservation(cloud=c, samples=tuple(samples.get(c, ()))) for c in clouds),
    )
