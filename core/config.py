"""Typed, frozen configuration for pools, clouds and policy knobs.

Validation of user input (YAML) happens at the edge (`twin.scenario`, `live.config`); these
dataclasses only hold values that are already known to be well formed.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MaintenanceWindow:
    """A planned downtime of one cloud, in the same time base as `Snapshot.now`."""

    start: float
    end: float

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class CloudConfig:
    """What the policy knows about one cloud."""

    name: str
    region: str = "home"
    priority: int = 0  # lower is preferred (the facility's own cloud first)
    cost_per_vm_hour: float = 0.0
    quota: int = 100  # the most VMs daaas may run there at once
    expected_boot_s: float = 120.0  # a healthy boot; slower than slow_factor x this is "slow"
    maintenance: tuple[MaintenanceWindow, ...] = ()


@dataclass(frozen=True)
class PoolConfig:
    """One environment type (e.g. Mantid, Mantid-large-memory, GPU): identical VMs."""

    name: str
    min_ready: int = 2  # ready VMs kept waiting for requests
    max_total: int = 50  # all VMs of the pool, any state, any cloud
    idle_timeout_s: float = 2 * 3600.0  # inactivity before a warning
    grace_s: float = 15 * 60.0  # from warning to reclaim
    max_age_s: float = 7 * 24 * 3600.0  # a VM's whole life once allocated
    max_ready_age_s: float = 24 * 3600.0  # ready VMs older than this are recycled
    clouds: tuple[str, ...] = ()  # empty: any cloud
    user_locations: tuple[tuple[str, float], ...] = ()  # (location, share of this pool's users)


@dataclass(frozen=True)
class HealthConfig:
    """How clouds are judged and backed off."""

    window_s: float = 900.0  # observations older than this are forgotten
    max_error_rate: float = 0.5  # API errors / calls above this: failing
    min_calls: int = 3  # fewer calls than this say nothing about the error rate
    max_boot_failures: int = 2  # boot failures in the window above which: failing
    slow_factor: float = 3.0  # boots (or VMs still booting) slower than this x expected: slow
    backoff_initial_s: float = 300.0
    backoff_max_s: float = 3600.0
    backoff_growth: float = 2.0


@dataclass(frozen=True)
class PolicyConfig:
    """Policy knobs shared by all pools."""

    period_s: float = 60.0  # controller period (events also trigger passes)
    busy_cpu_percent: float = 20.0  # CPU above this counts as activity
    busy_io_bytes_per_s: float = 1e6  # I/O above this counts as activity
    maintenance_lead_s: float = 3600.0  # grow reserves elsewhere this long before a window
    boot_timeout_s: float = 1800.0  # a VM booting longer than this is given up
    latency_weight: float = 0.01  # cost units per ms of user-to-cloud latency
    remote_latency_ms: float = 80.0  # latency between a location and a region of another name
    latency_ms: tuple[tuple[str, str, float], ...] = ()  # (location, region, ms) overrides
    health: HealthConfig = field(default_factory=HealthConfig)


@dataclass(frozen=True)
class Config:
    """The whole policy configuration."""

    pools: tuple[PoolConfig, ...]
    clouds: tuple[CloudConfig, ...]
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def pool(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(name)

    def cloud(self, name: str) -> CloudConfig:
        for c in self.clouds:
            if c.name == name:
                return c
        raise KeyError(name)
