"""The embedded default's world: the twin's simulated clouds on the wall clock, plus a little demand.

With no cloud configured, `daaas serve` runs the real live VMM (store, reconcile, policy, usage log)
against `twin.cloud.SimCloud`s. Their SimPy environment is advanced to the wall clock at the start of
each pass (`env.run(until=seconds since start)`), so boots take real seconds. A small simulated
demand (`Demand`) asks for VMs through the store like the portal would, sends agent heartbeats and
releases, so a newcomer sees allocations, boots and reclaims in the log.
"""
from __future__ import annotations

import random

import simpy

from core.config import CloudConfig
from live.store.repo import ASSIGNED, Store
from twin.cloud import SimCloud, SimCloudSpec

EMBEDDED_CLOUDS = (
    (SimCloudSpec(name="sim-local", quota=6, boot_median_s=8.0, boot_failure_rate=0.05, api_error_rate=0.01),
     CloudConfig(name="sim-local", region="home", priority=0, cost_per_vm_hour=0.0, quota=6, expected_boot_s=8.0)),
    (SimCloudSpec(name="sim-public", quota=20, boot_median_s=15.0, boot_failure_rate=0.02),
     CloudConfig(name="sim-public", region="remote", priority=1, cost_per_vm_hour=0.4, quota=20,
                 expected_boot_s=15.0)),
)


class RealtimeWorld:
    """Simulated clouds whose SimPy time follows the wall clock from `start` (Unix seconds)."""

    def __init__(self, start: float, seed: int | None = None):
        self.start = start
        self.env = simpy.Environment()
        self.rng = random.Random(seed)
        self.clouds = {spec.name: SimCloud(self.env, spec, random.Random(self.rng.random()))
                       for spec, _ in EMBEDDED_CLOUDS}
        self.cloud_configs = tuple(cfg for _, cfg in EMBEDDED_CLOUDS)

    def advance(self, now: float) -> None:
        """Run the simulated clouds up to wall-clock `now` (never backwards)."""
        target = max(self.env.now, now - self.start)
        if target > self.env.now:
            self.env.run(until=target)


class Demand:
    """Poisson requests for the pools, sessions of random length, some left idle (reclaimed later)."""

    def __init__(self, store: Store, pools: list[str], rng: random.Random, *, mean_gap_s: float = 12.0,
                 mean_session_s: float = 45.0, abandon_share: float = 0.25):
        self.store, self.pools, self.rng = store, pools, rng
        self.mean_gap_s, self.mean_session_s, self.abandon_share = mean_gap_s, mean_session_s, abandon_share
        self._next: float | None = None
        self._ends: dict[str, float] = {}  # request -> when its user releases (inf: abandoned)
        self._n = 0

    def step(self, now: float) -> None:
        if self._next is None:
            self._next = now
        while self._next <= now:
            self._n += 1
            self.store.create_request(pool=self.rng.choice(self.pools), user=f"user{self.rng.randint(1, 12)}",
                                      now=self._next)
            self._next += self.rng.expovariate(1.0 / self.mean_gap_s)
        for req in self.store.requests(state=ASSIGNED):
            end = self._ends.get(req.id)
            if end is None:
                abandoned = self.rng.random() < self.abandon_share
                end = float("inf") if abandoned else now + self.rng.expovariate(1.0 / self.mean_session_s)
                self._ends[req.id] = end
            if now >= end:
                self.store.release(req.id, now=now)
            elif end != float("inf"):  # an agent on a VM in use: busy CPU, recent input
                self.store.heartbeat(req.vm_id, now=now, cpu_percent=self.rng.uniform(30, 90),
                                     io_bytes_per_s=0.0, last_input_at=now, busy=True)
