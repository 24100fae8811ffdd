"""Clock adapters over SimPy: simulated time for the twin, wall time for the embedded live default."""
from __future__ import annotations

import simpy


class SimClock:
    """`now` is the SimPy environment's time (simulated seconds from the scenario's start)."""

    def __init__(self, env: simpy.Environment):
        self._env = env

    def now(self) -> float:
        return float(self._env.now)
