"""core.forecast: the pure predictive sizer (history in, targets out)."""
from __future__ import annotations

import math

import pytest

from core.config import CloudConfig, Config, PoolConfig
from core.forecast import (
    CalendarEntry,
    DemandHistory,
    ForecastMemory,
    PredictiveConfig,
    fit_pool,
    plan_reserves,
    poisson_quantile,
    predict_targets,
    wait_probability,
)

CONFIG = Config(pools=(PoolConfig("p", min_ready=2, max_total=20),),
                clouds=(CloudConfig("c", expected_boot_s=90.0),))
OFFICE = [0.1] * 7 + [1, 3, 5, 5, 4, 3, 4, 5, 4, 3, 1] + [0.3] * 6


@pytest.mark.parametrize("mean,level,k", [(0.0, 0.95, 0), (1.0, 0.5, 1), (1.0, 0.95, 3), (0.05, 0.95, 0),
                                          (10.0, 0.99, 18)])
def test_poisson_quantile(mean, level, k):
    assert poisson_quantile(mean, level) == k


def test_wait_probability():
    assert wait_probability(0.5, 0) == 1.0
    assert wait_probability(0.5, 1) == pytest.approx(1 - math.exp(-0.5))
    assert wait_probability(0.5, 3) < wait_probability(0.5, 2) < wait_probability(0.5, 1)


def test_plan_reserves_meets_the_wait_budget_and_spends_it_on_quiet_hours():
    rates = OFFICE
    lead = 150.0
    for level in (0.9, 0.95, 0.99):
        plan = plan_reserves(rates, lead, level)
        waits = sum(r * wait_probability(r * lead / 3600, k) for r, k in zip(rates, plan, strict=True))
        assert waits <= (1 - level) * sum(rates) + 1e-9
    plan = plan_reserves(rates, lead, 0.95)
    assert max(plan[8:12]) >= 1 and min(plan[:6]) == 0  # busy hours keep VMs, quiet nights none
    assert plan_reserves(rates, lead, 0.95, floor=1) == tuple(max(1, k) for k in plan_reserves(rates, lead, 0.95,
                                                                                                 floor=1))


def _history(days: int, scale: float = 1.0) -> DemandHistory:
    counts = tuple(round(OFFICE[h % 24] * scale) for h in range(24 * days))
    return DemandHistory("p", 0.0, counts, (("home", 3), ("remote", 1)))


def test_short_history_falls_back_to_reactive_and_says_so():
    cfg = PredictiveConfig(enabled=True, floor=0)
    s = predict_targets({"p": DemandHistory("p", 0.0, (0,) * 10)},
                        CONFIG, cfg, now=10 * 3600.0)
    assert s.targets == {"p": 2}  # min_ready
    assert s.memory.fallback == {"p"}
    assert any("too little history" in n.message and n.details["fallback"] == "reactive" for n in s.notes)


def test_refits_on_schedule_not_per_pass():
    cfg = PredictiveConfig(enabled=True, floor=0)
    now = 3 * 86400.0
    s1 = predict_targets({"p": _history(3)}, CONFIG, cfg, now=now)
    assert s1.notes and s1.memory.next_refit == now + cfg.refit_s
    s2 = predict_targets({}, CONFIG, cfg, memory=s1.memory, now=now + 3600)  # no history needed between refits
    assert not s2.notes and s2.memory is s1.memory
    s3 = predict_targets({"p": _history(3)}, CONFIG, cfg, memory=s1.memory, now=now + cfg.refit_s)
    assert s3.notes and s3.memory is not s1.memory


def test_targets_follow_the_daily_cycle_and_switch_one_lead_ahead():
    cfg = PredictiveConfig(enabled=True, floor=0, service_level=0.95, refit_s=24 * 3600.0)
    hist = {"p": _history(7, 2.0)}
    day = 7 * 86400.0
    mem = predict_targets(hist, CONFIG, cfg, now=day).memory
    night = predict_targets(hist, CONFIG, cfg, memory=mem, now=day + 3 * 3600).targets["p"]
    peak = predict_targets(hist, CONFIG, cfg, memory=mem, now=day + 10 * 3600).targets["p"]
    assert night == 0 and peak >= 2
    lead = 90.0 + cfg.lead_buffer_s
    plan = mem.forecasts["p"].reserves
    rise = next(h for h in range(1, 24) if plan[h] > plan[h - 1])  # the morning's first rise
    before = predict_targets(hist, CONFIG, cfg, memory=mem, now=day + 3 * 3600)
    assert before.next_change == day + rise * 3600 - lead  # no pass at hours whose reserve is the same
    at = predict_targets(hist, CONFIG, cfg, memory=mem, now=day + rise * 3600 - lead)
    assert at.targets["p"] == plan[rise] > before.targets["p"]
    assert at.next_change > day + rise * 3600 - lead
    assert dict(at.locations["p"]) == {"home": 0.75, "remote": 0.25}


H = 3600.0


@pytest.mark.parametrize("reserves,now,target,change", [
    ((0, 0, 2, 2, 1), 0.0, 0, 2 * H - 100),  # rises one lead before hour 2
    ((0, 0, 2, 2, 1), 2 * H - 100, 2, 4 * H),  # holds through hour 3, falls when hour 4 starts
    ((0, 0, 2, 2, 1), 2 * H - 101, 0, 2 * H - 100),
    ((3, 1, 1, 1, 1), 10.0, 3, H),  # a fall waits for the hour's end (no lead point)
    ((1, 1, 1, 1, 1), 0.0, 1, 5 * H),  # nothing changes until the plan ends (the floor: 1)
    ((0, 0, 0), 0.0, 1, 9 * H),  # floor 1 everywhere: no change before the refit
])
def test_target_and_its_next_change(reserves, now, target, change):
    from core.forecast import PoolForecast, _target_and_change

    f = PoolForecast("p", 0.0, 0.0, (1.0,) * len(reserves), reserves=reserves)
    floor = 1 if reserves == (0, 0, 0) else 0
    assert _target_and_change(f, now, 100.0, floor, 10, 9 * H) == (target, change)


def test_never_below_the_floor():
    cfg = PredictiveConfig(enabled=True)  # floor: min_ready
    hist = {"p": _history(7)}
    mem = predict_targets(hist, CONFIG, cfg, now=7 * 86400.0).memory
    for h in range(24):
        s = predict_targets(hist, CONFIG, cfg, memory=mem, now=7 * 86400.0 + h * 3600)
        mem = s.memory
        assert s.targets["p"] >= 2


def test_calendar_multiplies_forecast_in_its_hours():
    h = _history(7)
    cal = (CalendarEntry("p", 7 * 86400.0 + 8 * 3600, 7 * 86400.0 + 12 * 3600, factor=3.0),)
    plain = fit_pool(h, PredictiveConfig(), now=0, horizon_h=24)
    beam = fit_pool(h, PredictiveConfig(), now=0, horizon_h=24, calendar=cal)
    assert beam.calendar_factor == 3.0
    assert beam.rates[9] == pytest.approx(3 * plain.rates[9])
    assert beam.rates[15] == pytest.approx(plain.rates[15])


def test_calendar_factor_is_learned_from_past_calendar_hours():
    counts = [round(OFFICE[i % 24] * 2) for i in range(24 * 7)]
    for i in range(24 * 2 + 9, 24 * 2 + 13):  # a past beam-time doubled demand
        counts[i] *= 2
    h = DemandHistory("p", 0.0, tuple(counts))
    cal = (CalendarEntry("p", 2 * 86400.0 + 9 * 3600, 2 * 86400.0 + 13 * 3600, factor=5.0),)
    f = fit_pool(h, PredictiveConfig(), now=0, horizon_h=24, calendar=cal)
    assert 1.5 < f.calendar_factor < 2.5


def test_memory_is_explicit():
    assert ForecastMemory().next_refit == -math.inf


def test_holt_winters_recursion_equals_statsmodels():
    import numpy as np

    from core.forecast import holt_winters

    rng = np.random.default_rng(3)
    y = rng.poisson(3 + 2 * np.sin(np.arange(336) * 2 * np.pi / 24)).astype(float)
    for alpha, gamma in ((0.1, 0.1), (0.3, 0.2)):
        fast = holt_winters(y, alpha, gamma, 24)
        ref = holt_winters(y, alpha, gamma, 24, engine="statsmodels")
        # Hours 1..23 ahead agree exactly; 24 h ahead statsmodels (0.14) takes another seasonal term
        # than the textbook s(n+h-m) = s(n) the recursion uses, so the last hour is left out.
        assert np.allclose(fast[:23], ref[:23], atol=1e-9)


def test_an_uncertain_rate_fattens_the_tail_as_an_arrival_sees_it():
    # Arrivals come more often when the rate is high, so an arrival sees the size-biased rate: every
    # tail, even P(N >= 1), is above Poisson's at the same mean.
    for reserve in (1, 2, 3, 4):
        poisson = wait_probability(0.5, reserve)
        assert wait_probability(0.5, reserve, 0.5) > poisson
        assert wait_probability(0.5, reserve, 1e-6) == pytest.approx(poisson, rel=1e-4)


@pytest.mark.parametrize("mean,reserve,c2", [(0.5, 1, 0.5), (0.5, 2, 0.5), (1.5, 3, 1.0), (0.2, 1, 2.0)])
def test_uncertain_rate_wait_probability_is_the_arrival_weighted_average(mean, reserve, c2):
    import numpy as np

    # E[rate x P(Poisson(rate) >= reserve)] / E[rate], rate ~ Gamma(shape 1/c2, mean `mean`), numerically.
    shape = 1 / c2
    lam = np.linspace(1e-6, mean * 60, 400_001)
    dens = lam ** (shape - 1) * np.exp(-lam * shape / mean)
    tail = np.array([1 - sum(math.exp(-x) * x ** k / math.factorial(k) for k in range(reserve)) for x in lam[::100]])
    tail = np.interp(lam, lam[::100], tail)
    expected = float(np.sum(lam * tail * dens) / np.sum(lam * dens))
    assert wait_probability(mean, reserve, c2) == pytest.approx(expected, rel=2e-3)



def _ref_plan(series, level):
    """The planner written the slow way: per row, per reserve, per multiplier (a reference)."""
    rows = []
    for rates, lead_s, floor, cap, disp in series:
        for r in rates:
            hi = max(floor, min(cap, poisson_quantile(r * lead_s / 3600 * (1 + 4 * disp), 1 - 1e-4) + 2))
            rows.append({k: r * wait_probability(r * lead_s / 3600, k, disp) for k in range(floor, hi + 1)})
    budget = (1 - level) * sum(sum(s[0]) for s in series)

    def choose(mu):
        pick = [min(row, key=lambda k, row=row: (k + mu * row[k], k)) for row in rows]
        return pick, sum(row[k] for row, k in zip(rows, pick, strict=True))

    lo, hi = 1e-6, 1.0
    while choose(hi)[1] > budget:
        hi *= 4
    while hi / lo > 1.0001:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if choose(mid)[1] > budget else (lo, mid)
    return choose(hi)


@pytest.mark.parametrize("series,level", [
    ([(OFFICE, 150.0, 0, 20, 0.0)], 0.95),
    ([(OFFICE, 150.0, 1, 20, 0.0), ([0.2] * 24, 60.0, 0, 5, 0.0)], 0.9),
    ([([x * 3 for x in OFFICE], 300.0, 0, 30, 0.5), ([1.0] * 24, 90.0, 0, 3, 0.0)], 0.97),
])
def test_vectorised_planner_equals_the_reference(series, level):
    from core.forecast import plan_reserves_jointly

    plans = plan_reserves_jointly(series, level)
    ref, ref_waits = _ref_plan(series, level)
    flat = [k for plan in plans for k in plan]
    waits = sum(r * wait_probability(r * lead / 3600, k, disp)
                for (rates, lead, _, _, disp), plan in zip(series, plans, strict=True)
                for r, k in zip(rates, plan, strict=True))
    assert sum(flat) == sum(ref) and waits == pytest.approx(ref_waits)
    assert waits <= (1 - level) * sum(sum(s[0]) for s in series) + 1e-9


def test_one_budget_over_the_week_keeps_fewer_vms_at_the_weekend():
    from core.forecast import plan_reserves_jointly

    weekdays = [1.0] * 5 + [0.3, 0.2]
    rates = [OFFICE[h % 24] * 2 * weekdays[h // 24] for h in range(24 * 7)]
    (week,) = plan_reserves_jointly([(rates, 150.0, 0, 20, 0.0)], 0.95)
    daily = [k for d in range(7) for k in plan_reserves(rates[24 * d:24 * d + 24], 150.0, 0.95)]
    assert sum(week[5 * 24:]) < sum(daily[5 * 24:])  # a wait at the weekend costs more reserve-hours
    assert sum(week) < sum(daily)


def _series(kind: str, days: int = 6) -> DemandHistory:
    import numpy as np

    rng = np.random.default_rng(11)
    if kind == "office":
        lam = [OFFICE[h % 24] * 3 for h in range(24 * days)]
    else:  # bursty without a daily cycle: a level that wanders from day to day, bursts within it
        level = np.repeat(rng.gamma(4.0, 0.75, days * 2), 12)
        lam = list(level * rng.gamma(0.7, 1 / 0.7, 24 * days))
    return DemandHistory("p", 0.0, tuple(int(x) for x in rng.poisson(lam)))


@pytest.mark.parametrize("kind,expect", [("office", {"holt-winters", "profile"}), ("bursty", {"level"})])
def test_model_is_chosen_by_how_well_it_forecast_the_last_days(kind, expect):
    f = fit_pool(_series(kind), PredictiveConfig(), now=0, horizon_h=24)
    assert f.method in expect


@pytest.mark.parametrize("n,methods", [(24, ("seasonal-naive", "level")), (47, ("seasonal-naive", "level")),
                                       (48, ("holt-winters", "profile", "sharp-profile", "level"))])
def test_models_tried_depend_on_history(n, methods):
    from core.forecast import _methods

    assert _methods(n) == methods


def test_count_quantiles_match_poisson_quantile():
    import numpy as np

    from core.forecast import _count_quantiles

    means = np.array([0.0, 0.05, 1.0, 1.0, 10.0])
    for level in (0.5, 0.95, 0.99):
        got = _count_quantiles(means, np.zeros(5), level, 60)
        assert list(got) == [poisson_quantile(m, level) for m in means]
