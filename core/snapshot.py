"""What the policy sees in one pass: VMs, pending requests, cloud observations and `now`.

The shell (twin or live) builds a `Snapshot` from what it holds; provider data is translated
before it gets here, so the policy never learns which cloud API, if any, is behind a VM.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class VmState(StrEnum):
    """One VM's life: requested -> booting -> ready -> allocated -> reclaiming -> gone."""

    REQUESTED = "requested"  # asked of the cloud, no id yet
    BOOTING = "booting"
    READY = "ready"  # booted, waiting in the pool
    ALLOCATED = "allocated"  # a user has it
    RECLAIMING = "reclaiming"  # terminate asked, not yet gone
    GONE = "gone"


LIVE_STATES = frozenset({VmState.REQUESTED, VmState.BOOTING, VmState.READY, VmState.ALLOCATED})


@dataclass(frozen=True)
class Vm:
    """One VM as the policy sees it. Times are in the snapshot's time base."""

    id: str
    pool: str
    cloud: str
    state: VmState
    created_at: float
    ready_at: float | None = None
    owner: str | None = None  # the user it is allocated to
    allocated_at: float | None = None
    last_input_at: float | None = None  # the user's last keyboard, mouse or session input
    last_busy_at: float | None = None  # last time CPU or I/O was above the busy thresholds
    cpu_percent: float = 0.0  # latest sample
    io_bytes_per_s: float = 0.0  # latest sample
    warned_at: float | None = None  # when the owner was warned of a reclaim
    drained: bool = False  # the owner was told of a coming maintenance


@dataclass(frozen=True)
class Request:
    """A user waiting for a VM of a pool."""

    id: str
    pool: str
    user: str
    requested_at: float
    location: str = "home"


@dataclass(frozen=True)
class HealthSample:
    """One measured outcome at a cloud: an API call, or a boot and how long it took."""

    at: float
    kind: str  # "api" or "boot"
    ok: bool
    duration_s: float = 0.0


@dataclass(frozen=True)
class CloudObservation:
    """What the shell measured of one cloud recently (it may drop samples older than the window)."""

    cloud: str
    samples: tuple[HealthSample, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    """Everything one policy pass decides from."""

    now: float
    vms: tuple[Vm, ...]
    requests: tuple[Request, ...] = ()
    clouds: tuple[CloudObservation, ...] = ()

    def observation(self, cloud: str) -> CloudObservation:
        for o in self.clouds:
            if o.cloud == cloud:
                return o
        return CloudObservation(cloud=cloud)
