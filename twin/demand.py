"""Demand: when users of each pool ask for a VM, where they are, and how their sessions go.

Arrivals are a non-homogeneous Poisson process (daily and weekly cycles, beam-time surges) drawn by
thinning. Each arrival carries its whole ground truth (session length, whether the user abandons the
VM, whether a computation keeps running), so the model never draws randomness out of order.
"""
from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass

from twin.scenario import DemandSpec

DAY, WEEK = 86400.0, 604800.0


@dataclass(frozen=True)
class Arrival:
    """One user's request and what they will do with the VM."""

    t: float
    pool: str
    user: str
    location: str
    session_s: float  # how long the user works before releasing (or walking away)
    abandons: bool  # walks away without releasing
    busy_s: float  # after walking away, how long a computation keeps the VM busy (0: none)


def rate_at(spec: DemandSpec, t: float, start_weekday: int) -> float:
    """Arrivals per second at simulated time `t`."""
    hour = int((t % DAY) // 3600)
    day = (int(t // DAY) + start_weekday) % 7
    r = spec.rate_per_hour / 3600.0 * spec.daily[hour] * spec.weekly[day]
    for s in spec.surges:
        if s.start <= t < s.end:
            r *= s.factor
    return r


def peak_rate(spec: DemandSpec) -> float:
    surge = max((s.factor for s in spec.surges), default=1.0)
    return spec.rate_per_hour / 3600.0 * max(spec.daily) * max(spec.weekly) * max(1.0, surge)


def arrivals(pool: str, spec: DemandSpec, rng: random.Random, *, duration_s: float, start_weekday: int,
             users: int = 200) -> Iterator[Arrival]:
    """Every arrival of one pool within `duration_s`, in time order."""
    peak = peak_rate(spec)
    if peak <= 0:
        return
    locs = [loc for loc, _ in spec.locations]
    cum, acc = [], 0.0
    for _, w in spec.locations:
        acc += w
        cum.append(acc)
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= duration_s:
            return
        accept = rng.random() * peak < rate_at(spec, t, start_weekday)
        # Draw the ground truth even for rejected candidates: a scenario change that affects only
        # some arrivals then leaves the others' draws untouched (common random numbers).
        u = rng.randrange(users)
        loc = locs[min(bisect.bisect_left(cum, rng.random() * acc), len(locs) - 1)]
        session = rng.lognormvariate(0.0, spec.session_sigma) * spec.session_median_s
        abandons = rng.random() < spec.abandon_rate
        busy = rng.lognormvariate(0.0, spec.busy_sigma) * spec.busy_median_s
        busy_left = abandons and rng.random() < spec.busy_abandon_rate
        if accept:
            yield Arrival(t, pool, f"{pool}-u{u}", loc, session, abandons, busy if busy_left else 0.0)
