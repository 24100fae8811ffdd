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
    s2 = predict_targets({}, CONFIG, cfg, s1.memory, now=now + 3600)  # no history needed between refits
    assert not s2.notes and s2.memory is s1.memory
    s3 = predict_targets({"p": _history(3)}, CONFIG, cfg, s1.memory, now=now + cfg.refit_s)
    assert s3.notes and s3.memory is not s1.memory


def test_targets_follow_the_daily_cycle_and_switch_one_lead_ahead():
    cfg = PredictiveConfig(enabled=True, floor=0, service_level=0.95, refit_s=24 * 3600.0)
    hist = {"p": _history(7, 2.0)}
    day = 7 * 86400.0
    mem = predict_targets(hist, CONFIG, cfg, now=day).memory
    night = predict_targets(hist, CONFIG, cfg, mem, now=day + 3 * 3600).targets["p"]
    peak = predict_targets(hist, CONFIG, cfg, mem, now=day + 10 * 3600).targets["p"]
    assert night == 0 and peak >= 2
    lead = 90.0 + cfg.lead_buffer_s
    before = predict_targets(hist, CONFIG, cfg, mem, now=day + 7 * 3600 - lead - 1)
    at = predict_targets(hist, CONFIG, cfg, mem, now=day + 7 * 3600 - lead)
    assert before.next_change == day + 7 * 3600 - lead
    assert at.targets["p"] >= before.targets["p"] and at.next_change == day + 7 * 3600
    assert dict(at.locations["p"]) == {"home": 0.75, "remote": 0.25}


def test_never_below_the_floor():
    cfg = PredictiveConfig(enabled=True)  # floor: min_ready
    hist = {"p": _history(7)}
    mem = predict_targets(hist, CONFIG, cfg, now=7 * 86400.0).memory
    for h in range(24):
        s = predict_targets(hist, CONFIG, cfg, mem, now=7 * 86400.0 + h * 3600)
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


def test_an_uncertain_rate_fattens_the_tail():
    # A Gamma-mixed rate makes no arrival at all likelier (Jensen) but several arrivals likelier too.
    assert wait_probability(0.5, 1, 0.5) < wait_probability(0.5, 1)
    for reserve in (1, 2, 3, 4):
        poisson = wait_probability(0.5, reserve)
        if reserve >= 2:
            assert wait_probability(0.5, reserve, 0.5) > poisson
        assert wait_probability(0.5, reserve, 1e-6) == pytest.approx(poisson, rel=1e-4)
