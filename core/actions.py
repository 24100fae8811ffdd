"""The small fixed set of things the policy can ask the shell to do."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    """Start one VM of `pool` on `cloud`. `probe` marks a launch that tests a backed-off cloud."""

    pool: str
    cloud: str
    reason: str = "reserve"
    probe: bool = False


@dataclass(frozen=True)
class Assign:
    """Give ready VM `vm` to the waiting request `request`."""

    vm: str
    request: str
    user: str
    pool: str


@dataclass(frozen=True)
class Warn:
    """Tell the owner of `vm` it will be reclaimed at `reclaim_at` unless it is used."""

    vm: str
    reason: str
    reclaim_at: float


@dataclass(frozen=True)
class Terminate:
    """Delete `vm` from its cloud (reclaim, recycle, drain or give up a boot)."""

    vm: str
    reason: str


@dataclass(frozen=True)
class Drain:
    """Tell the owner of allocated `vm` that its cloud goes down at `at`."""

    vm: str
    cloud: str
    at: float


Action = Launch | Assign | Warn | Terminate | Drain
