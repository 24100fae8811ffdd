"""The ports the policy's shells implement: a cloud, a clock, a transfer service.

The twin implements them over SimPy, live over libcloud, the wall clock and the DMTS. Adapters do not
sleep or loop: the caller (a SimPy process, or the live VMM loop) drives them. Arguments are
keyword-only so adapters cannot silently disagree on order.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class CloudError(Exception):
    """A cloud call failed. `quota` marks a refusal for lack of quota (fail over, don't back off)."""

    def __init__(self, message: str, *, quota: bool = False, transient: bool = True):
        super().__init__(message)
        self.quota = quota
        self.transient = transient


class CloudVmState(StrEnum):
    """A provider's VM state translated at the edge (libcloud's NodeState, a SimCloud's own)."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    ERROR = "error"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CloudVm:
    """One VM as a cloud lists it: its id, translated state and the owner tags daaas set."""

    id: str
    state: CloudVmState
    tags: Mapping[str, str] = field(default_factory=dict)
    created_at: float | None = None


@runtime_checkable
class Cloud(Protocol):
    """A place to run VMs. Every call may raise `CloudError`."""

    name: str

    def launch(self, *, pool: str, tags: Mapping[str, str]) -> str:
        """Ask for one VM of `pool`, tagged with `tags`; return its id at once (it boots later)."""
        ...

    def terminate(self, *, vm_id: str) -> None:
        """Delete a VM. Deleting one that is already gone is not an error."""
        ...

    def list_vms(self) -> Sequence[CloudVm]:
        """Every VM that carries daaas's owner tags, in one call (never one call per VM)."""
        ...


@runtime_checkable
class Clock(Protocol):
    """Where `now` comes from: simulated seconds in the twin, Unix seconds live."""

    def now(self) -> float: ...


class TransferState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class TransferStatus:
    id: str
    state: TransferState
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    error: str | None = None


@runtime_checkable
class TransferService(Protocol):
    """Moves files from a source (the archive) to a destination (a VM's DMTS), third-party."""

    def start(self, *, source: str, destination: str, paths: Sequence[str], streams: int) -> str:
        """Begin copying `paths` (relative to `source`) to `destination`; return a transfer id."""
        ...

    def status(self, *, transfer_id: str) -> TransferStatus: ...

    def cancel(self, *, transfer_id: str) -> None: ...


OWNER_TAG = "daaas-owner"  # the daaas installation id
POOL_TAG = "daaas-pool"
VM_TAG = "daaas-vm"  # daaas's own id for the VM, known before the cloud answers
IMAGE_TAG = "daaas-image-version"
