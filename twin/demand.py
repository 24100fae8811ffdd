"""Demand: when users of each pool ask for a VM, where they are, and how their sessions go.

Arrivals are a non-homogeneous Poisson process (daily and weekly cycles, beam-time surges) drawn by
thinning. Each arrival carries its whole ground truth (session length, whether the user abandons the
VM, whether a computation keeps running), so the model never draws randomness out of order.
"""
from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from math import exp as _exp
from math import log as _log
from math import sqrt as _sqrt

from twin.scenario import DemandSpec

DAY, WEEK = 86400.0, 604800.0
_NV_MAGICCONST = 4 * _exp(-0.5) / _sqrt(2.0)  # Kinderman and Monahan's, as random.normalvariate has it


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
    # The generator draws five to ten numbers for each of about four candidates an accepted arrival
    # costs, so it is written for speed: the rate comes from an hour-of-week table (the same product
    # `rate_at` computes), and `expovariate`, `lognormvariate` and `randrange` are spelled out as the
    # very calls they make (`-log(1 - random())`; `exp` of Kinderman-Monahan's normal variate, `_normal`;
    # `getrandbits` until below the bound): the same draws in the same order, so the same arrivals
    # (tests/twin/test_demand.py compares them draw for draw).
    base = spec.rate_per_hour / 3600.0
    week = [[base * spec.daily[h] * spec.weekly[(d + start_weekday) % 7] for h in range(24)] for d in range(7)]
    surges = [(s.start, s.end, s.factor) for s in spec.surges]
    random_, getrandbits = rng.random, rng.getrandbits
    user_bits = users.bit_length()
    n_locs = len(locs)
    s_sigma, s_median = spec.session_sigma, spec.session_median_s
    b_sigma, b_median = spec.busy_sigma, spec.busy_median_s
    abandon_rate, busy_abandon_rate = spec.abandon_rate, spec.busy_abandon_rate
    t = 0.0
    while True:
        t += -_log(1.0 - random_()) / peak
        if t >= duration_s:
            return
        r = week[int(t // DAY) % 7][int((t % DAY) // 3600)]
        for start, end, factor in surges:
            if start <= t < end:
                r *= factor
        accept = random_() * peak < r
        # Draw the ground truth even for rejected candidates: a scenario change that affects only
        # some arrivals then leaves the others' draws untouched (common random numbers).
        u = getrandbits(user_bits)
        while u >= users:
            u = getrandbits(user_bits)
        loc = locs[min(bisect.bisect_left(cum, random_() * acc), n_locs - 1)]
        session = _exp(_normal(random_) * s_sigma) * s_median
        abandons = random_() < abandon_rate
        busy = _exp(_normal(random_) * b_sigma) * b_median
        busy_left = abandons and random_() < busy_abandon_rate
        if accept:
            yield Arrival(t, pool, f"{pool}-u{u}", loc, session, abandons, busy if busy_left else 0.0)


def _normal(random_: Callable[[], float]) -> float:
    """A standard normal variate drawn exactly as `random.Random.normalvariate` draws it (Kinderman and
    Monahan), so `exp(_normal(r) * sigma)` is `r.lognormvariate(0, sigma)` to the last bit."""
    while True:
        u1 = random_()
        u2 = 1.0 - random_()
        z = _NV_MAGICCONST * (u1 - 0.5) / u2
        if z * z / 4.0 <= -_log(u2):
            return z
