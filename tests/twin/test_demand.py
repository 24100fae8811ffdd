"""Demand: arrivals follow the daily and weekly profiles and beam-time surges (statistical, fixed seed)."""
from __future__ import annotations

import random

from twin.demand import DAY, arrivals, rate_at
from twin.scenario import DAILY_PROFILES, DemandSpec, Surge

OFFICE = DAILY_PROFILES["office"]


def _counts(spec: DemandSpec, days: int, seed: int = 1, start_weekday: int = 0) -> list[int]:
    hours = [0] * (days * 24)
    for a in arrivals("p", spec, random.Random(seed), duration_s=days * DAY, start_weekday=start_weekday):
        hours[int(a.t // 3600)] += 1
    return hours


def test_hourly_arrivals_follow_the_daily_profile():
    spec = DemandSpec(rate_per_hour=20.0, weekly=(1.0,) * 7)
    days = 60
    hours = _counts(spec, days)
    for h in range(24):
        mean = sum(hours[d * 24 + h] for d in range(days)) / days
        expected = 20.0 * OFFICE[h]
        # Poisson: the mean of 60 draws has sd sqrt(expected/60); allow 5 sd plus a little.
        assert abs(mean - expected) <= 5 * (expected / days) ** 0.5 + 0.3, (h, mean, expected)
    assert sum(hours) / days > 20.0 * sum(OFFICE) * 0.9


def test_weekly_profile_quiet_weekends():
    spec = DemandSpec(rate_per_hour=10.0, daily=(1.0,) * 24)
    hours = _counts(spec, 28, start_weekday=0)
    per_day = [sum(hours[d * 24:(d + 1) * 24]) for d in range(28)]
    weekdays = [n for d, n in enumerate(per_day) if d % 7 < 4]
    sundays = [n for d, n in enumerate(per_day) if d % 7 == 6]
    assert 200 < sum(weekdays) / len(weekdays) < 280  # 240 expected
    assert 28 < sum(sundays) / len(sundays) < 68  # 48 expected (0.2)


def test_a_surge_multiplies_demand_while_it_runs():
    spec = DemandSpec(rate_per_hour=10.0, daily=(1.0,) * 24, weekly=(1.0,) * 7,
                      surges=(Surge(2 * DAY, 4 * DAY, 4.0),))
    hours = _counts(spec, 6, seed=3)
    before, during = sum(hours[:48]) / 48, sum(hours[48:96]) / 48
    after = sum(hours[96:]) / 48
    assert 7 < before < 13 and 7 < after < 13
    assert 3.0 < during / ((before + after) / 2) < 5.0
    assert rate_at(spec, 3 * DAY, 0) == 4 * rate_at(spec, DAY, 0)


def test_arrivals_are_ordered_deterministic_and_carry_their_ground_truth():
    spec = DemandSpec(rate_per_hour=8.0, abandon_rate=0.5, busy_abandon_rate=0.5,
                      locations=(("home", 3.0), ("partner", 1.0)))
    a = list(arrivals("p", spec, random.Random(9), duration_s=7 * DAY, start_weekday=0))
    b = list(arrivals("p", spec, random.Random(9), duration_s=7 * DAY, start_weekday=0))
    assert a == b and [x.t for x in a] == sorted(x.t for x in a)
    assert a != list(arrivals("p", spec, random.Random(10), duration_s=7 * DAY, start_weekday=0))
    abandoned = [x for x in a if x.abandons]
    assert 0.35 < len(abandoned) / len(a) < 0.65
    assert all(x.busy_s == 0 for x in a if not x.abandons)
    assert 0.3 < sum(1 for x in abandoned if x.busy_s > 0) / len(abandoned) < 0.7
    home = sum(1 for x in a if x.location == "home") / len(a)
    assert 0.65 < home < 0.85


def test_a_zero_rate_pool_has_no_arrivals():
    assert list(arrivals("p", DemandSpec(rate_per_hour=0.0), random.Random(1), duration_s=DAY,
                         start_weekday=0)) == []


def _reference_arrivals(pool, spec, rng, *, duration_s, start_weekday, users=200):
    """The generator as first written, with the library's own draws: the fast one must match it draw for draw."""
    import bisect

    from twin.demand import Arrival, peak_rate
    peak = peak_rate(spec)
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
        u = rng.randrange(users)
        loc = locs[min(bisect.bisect_left(cum, rng.random() * acc), len(locs) - 1)]
        session = rng.lognormvariate(0.0, spec.session_sigma) * spec.session_median_s
        abandons = rng.random() < spec.abandon_rate
        busy = rng.lognormvariate(0.0, spec.busy_sigma) * spec.busy_median_s
        busy_left = abandons and rng.random() < spec.busy_abandon_rate
        if accept:
            yield Arrival(t, pool, f"{pool}-u{u}", loc, session, abandons, busy if busy_left else 0.0)


def test_the_generator_draws_exactly_what_the_library_calls_would():
    specs = [
        DemandSpec(rate_per_hour=17.5, locations=(("home", 0.8), ("partner", 0.2)), abandon_rate=0.3,
                   surges=(Surge(start=2 * DAY, end=3 * DAY, factor=2.5), Surge(start=2.5 * DAY, end=4 * DAY,
                                                                               factor=1.5))),
        DemandSpec(rate_per_hour=4.0, session_sigma=0.1, busy_abandon_rate=0.9, abandon_rate=0.5),
    ]
    for spec in specs:
        for weekday in (0, 3, 6):
            fast = list(arrivals("p", spec, random.Random(5), duration_s=9 * DAY, start_weekday=weekday))
            slow = list(_reference_arrivals("p", spec, random.Random(5), duration_s=9 * DAY, start_weekday=weekday))
            assert fast == slow and len(fast) > 100
