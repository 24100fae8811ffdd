"""Predictive sizing: reserves from a forecast of arrivals instead of a fixed `min_ready`.

Pure: hourly request counts in (the shell accumulates them from its own log), targets out. Per pool,
the counts of the last `window_s` are adjusted for a day-of-week shape (with a week or more of
history) and the facility calendar (beam-times: a multiplier learned from past calendar hours, else
the planner's declared one), then forecast by one of a few models: additive Holt-Winters with a daily
season (the recursion statsmodels' ExponentialSmoothing runs, or statsmodels itself), a mean-day
profile (smoothed, or sharp for cycles within the day such as jobs every three hours), or a level
without season. The model is the one that best forecast the last one or two days from the days
before (Poisson deviance), chosen again once a day from the data alone, never from a scenario name:
a bursty trace without a daily cycle gets the level model. Fits happen on a fixed schedule
(`refit_s`, aligned to multiples of it), never per pass: they live in `ForecastMemory`.

Each pool's reserve for an hour comes from the chance an arrival finds it used up: with a reserve R
kept topped up, an arrival waits when R or more others arrived within the lead time (the pool's
expected boot plus `lead_buffer_s`) before it. That count is Poisson at the forecast rate, or, when
the forecast's backtest shows arrivals more crowded than that (bursts within the hour, errors in
volume), negative binomial as an arrival sees it (size-biased). The levels differ by hour: the sizer
spends one budget of waits, (1 - `service_level`) of the arrivals forecast over the coming week, where
a ready VM costs the most per wait avoided (quiet hours, weekends, quiet pools), by one Lagrange
multiplier found by bisection. A fixed level per hour would either keep a VM idle all night for one
arrival or never keep one at a quiet pool. The reserve is never below the floor, and switches to the
next hour's reserve one lead time before that hour starts when that is larger, so VMs are ready when
its demand comes; it falls as soon as the hour with less demand starts (the sizing then trims the
surplus). With less than `min_history_s` of history a pool falls back to the reactive reserve, and
the sizing says so in its notes.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from core.config import Config, PoolConfig
from core.placement import rank_clouds

HOUR, DAY, WEEK = 3600.0, 86400.0, 604800.0
SMOOTHING = np.array([1.0, 2.0, 3.0, 2.0, 1.0]) / 9.0  # over 5 hours, centred


@dataclass(frozen=True)
class PredictiveConfig:
    """`policy.predictive` in a scenario (or the live config)."""

    enabled: bool = False
    service_level: float = 0.95  # P(arrivals within the lead time <= reserve)
    lead_buffer_s: float = 60.0  # added to the pool's expected boot time
    refit_s: float = 6 * HOUR
    window_s: float = 14 * DAY  # history the model is fitted on
    min_history_s: float = DAY  # less than this: the reactive reserve
    shadow: bool = False  # only log what the forecast would do; the reactive reserve acts
    floor: int | None = None  # the least reserve; None: each pool's min_ready
    per_pool_budget: bool = False  # each pool meets the service level alone (else: all requests together)
    smoothing_level: float = 0.1  # Holt-Winters level and seasonal smoothing (fixed: fitting is per refit;
    smoothing_seasonal: float = 0.1  # low, as hourly counts of a quiet pool are mostly noise)
    engine: str = "recursion"  # or "statsmodels" (same numbers, slower): see `holt_winters`
    dispersion: bool = True  # widen the reserve by the forecast's own past errors (negative binomial)
    horizon_s: float = 7 * DAY  # the budget of waits is spent over this much of the forecast
    select_s: float = DAY  # the model and its dispersion are chosen again at refits aligned to this


@dataclass(frozen=True)
class CalendarEntry:
    """A scheduled beam-time or experiment of one pool: more demand is expected from `start` to `end`."""

    pool: str
    start: float
    end: float
    factor: float = 2.0  # the planner's expectation, used until past calendar hours teach a factor
    name: str = ""

    def covers(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True)
class DemandHistory:
    """One pool's request counts per hour, complete hours only; bucket i covers `start + i h`."""

    pool: str
    start: float
    counts: tuple[int, ...]
    locations: tuple[tuple[str, int], ...] = ()  # requests per user location over the same span
    # Per hour, how many of its requests found at least 1, 2, 3 others of the pool within `crowd_window_s`
    # before them: what reserves of 1, 2, 3 would have let wait (empty: not measured).
    crowded: tuple[tuple[int, int, int], ...] = ()
    crowd_window_s: float = 0.0


@dataclass(frozen=True)
class PoolForecast:
    """A fitted forecast: expected arrivals in each hour from `start`."""

    pool: str
    fitted_at: float
    start: float
    rates: tuple[float, ...]
    locations: tuple[tuple[str, float], ...] = ()
    calendar_factor: float = 1.0
    method: str = "holt-winters"
    reserves: tuple[int, ...] = ()  # the reserve for each hour of `rates` (see `plan_reserves`)
    dispersion: float = 0.0  # relative variance of the true rate around the forecast (from past errors)

    def rate_at(self, t: float) -> float | None:
        i = int((t - self.start) // HOUR)
        return self.rates[i] if 0 <= i < len(self.rates) else None

    def reserve_at(self, t: float) -> int | None:
        i = int((t - self.start) // HOUR)
        return self.reserves[i] if 0 <= i < len(self.reserves) else None


@dataclass(frozen=True)
class ForecastMemory:
    """What the predictive sizer carries between passes: the fits and when to refit."""

    forecasts: Mapping[str, PoolForecast] = field(default_factory=dict)
    fallback: frozenset[str] = frozenset()  # pools on the reactive reserve (too little history)
    next_refit: float = -math.inf
    leads: Mapping[str, float] = field(default_factory=dict)  # each pool's lead time at the last refit


@dataclass(frozen=True)
class Note:
    """A line for the event log (a `policy` event)."""

    pool: str
    message: str
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Sizing:
    """One pass of the predictive sizer."""

    targets: Mapping[str, int]  # reserve per pool (fallback pools: their floor of min_ready)
    locations: Mapping[str, tuple[tuple[str, float], ...]]  # where each pool's demand comes from
    memory: ForecastMemory
    notes: tuple[Note, ...] = ()
    next_change: float = math.inf  # when targets may change next (hour boundaries, lead points, refits)


def needs_refit(memory: ForecastMemory, now: float) -> bool:
    """Whether a pass at `now` refits (the first pass at or after each aligned refit time)."""
    return now >= memory.next_refit


def refit_boundary(now: float, cfg: PredictiveConfig) -> float:
    """The latest aligned refit time at or before `now`: history is taken up to it."""
    return math.floor(now / cfg.refit_s) * cfg.refit_s


def poisson_quantile(mean: float, level: float) -> int:
    """The least k with P(Poisson(mean) <= k) >= level."""
    if mean <= 0:
        return 0
    p = math.exp(-mean)
    cdf, k = p, 0
    while cdf < level and k < 10_000:
        k += 1
        p *= mean / k
        cdf += p
    return k


def wait_probability(mean_in_lead: float, reserve: int, dispersion: float = 0.0) -> float:
    """P(N >= reserve): the chance an arrival finds the reserve used up, N the others that arrived
    within the lead before it.

    N is Poisson at the forecast mean; with `dispersion` c2 > 0 the rate itself is uncertain (Gamma
    with relative variance c2: the forecast's past errors, bursts), and N is negative binomial as an
    arrival sees it: arrivals come more often when the rate is high, so they see the size-biased
    rate (Gamma shape 1/c2 + 1, mean N = mean x (1 + c2)), not the average hour's.
    """
    if reserve <= 0:
        return 1.0
    if dispersion <= 1e-9 or mean_in_lead <= 0:
        p = math.exp(-mean_in_lead)
        cdf = p
        for k in range(1, reserve):
            p *= mean_in_lead / k
            cdf += p
        return max(0.0, 1.0 - cdf)
    shape = 1.0 / dispersion
    q = mean_in_lead / (shape + mean_in_lead)
    shape += 1.0  # size-biased (Palm): what an arrival sees
    p = (1.0 - q) ** shape
    cdf = p
    for j in range(reserve - 1):
        p *= (shape + j) / (j + 1) * q
        cdf += p
    return max(0.0, 1.0 - cdf)


def plan_reserves(rates: Sequence[float], lead_s: float, service_level: float, *, floor: int = 0,
                  cap: int = 1000) -> tuple[int, ...]:
    """A reserve per hour so that the expected share of arrivals that wait is at most 1 - level."""
    return plan_reserves_jointly([(rates, lead_s, floor, cap)], service_level)[0]


def plan_reserves_jointly(series: Sequence[tuple], service_level: float) -> list[tuple[int, ...]]:
    """Reserves per hour for several pools `(rates, lead_s, floor, cap[, dispersion])` sharing one
    budget of waits.

    Minimises idle reserve-hours + mu x expected waits hour by hour, with the multiplier mu found by
    bisection so the expected waits fit (1 - level) of all forecast arrivals: the waits go where a
    ready VM would avoid the fewest (quiet hours of quiet pools, weekends), whichever pool that is.
    One multiplier over the whole horizon is what makes the spending efficient: a wait avoided on a
    Sunday night must not cost more reserve-hours than one avoided on a Monday morning.
    """
    rates, means, disps, floors, caps, lengths = [], [], [], [], [], []
    for r_seq, lead_s, floor, cap, *rest in series:
        dispersion = max(0.0, float(rest[0])) if rest else 0.0
        r = np.clip(np.asarray(r_seq, dtype=float), 0.0, None)
        lengths.append(len(r))
        rates.append(r)
        means.append(r * (lead_s / HOUR))
        disps.append(np.full(len(r), dispersion))
        floors.append(np.full(len(r), int(floor)))
        caps.append(np.full(len(r), int(cap)))
    if not any(lengths):
        return [() for _ in series]
    rate, mean, disp = np.concatenate(rates), np.concatenate(means), np.concatenate(disps)
    floor, cap = np.concatenate(floors), np.concatenate(caps)
    # Reserves worth considering: up to the 1 - 1e-4 quantile of a widened count, plus two.
    wide = mean * (1.0 + 4.0 * disp)
    width = int(max(floor.max(), min(cap.max(), wide.max() + 12.0 * math.sqrt(wide.max()) + 14.0))) + 1
    ks = np.arange(width)
    hi = np.maximum(floor, np.minimum(cap, _count_quantiles(wide, np.zeros_like(wide), 1.0 - 1e-4, width) + 2))
    width = int(hi.max()) + 1  # the columns any row may pick
    ks = ks[:width]
    waits = rate[:, None] * _tail_table(mean, disp, width)  # expected waits in the hour for reserve k
    allowed = (ks[None, :] >= floor[:, None]) & (ks[None, :] <= hi[:, None])
    waits = np.where(allowed, waits, np.inf)
    budget = (1.0 - service_level) * float(rate.sum())
    flat_waits = waits.ravel()
    row_start = np.arange(len(rate)) * width
    cost = np.empty_like(waits)  # reused by every `choose`: the bisection calls it some twenty times

    def choose(mu: float) -> tuple[np.ndarray, float]:
        np.multiply(waits, mu, out=cost)
        np.add(cost, ks, out=cost)  # k + mu x waits: the same sums as `ks[None, :] + mu * waits`, in place
        pick = cost.argmin(axis=1)
        return pick, float(flat_waits[row_start + pick].sum())

    # Bisection on log(mu): a run plans a week of hours per pool at every refit, so the iterations
    # count; a relative precision of 1e-4 in mu is far below what the forecast itself can tell.
    lo, up = 0.0, 1.0
    plan, spent = choose(up)
    while spent > budget and up < 1e9:
        lo, up = up, up * 4.0
        plan, spent = choose(up)
    if spent <= budget:
        lo = max(lo, up / 4.0) if up > 1.0 else 1e-6
        while up / lo > 1.0001:
            mid = math.sqrt(lo * up)
            p, w = choose(mid)
            if w > budget:
                lo = mid
            else:
                up, plan = mid, p
    out, at = [], 0
    for n in lengths:
        out.append(tuple(plan[at:at + n].tolist()))
        at += n
    return out


def _count_pmf(mean: np.ndarray, disp: np.ndarray, width: int) -> np.ndarray:
    """P(N = k) for k < width, one row per (mean, dispersion): Poisson, or negative binomial as an
    arrival sees it when the rate itself is uncertain (see `wait_probability`)."""
    pmf = np.empty((len(mean), width))
    nb = disp > 1e-9
    shape = np.where(nb, 1.0 / np.where(nb, disp, 1.0), 1.0)
    q = np.where(nb, mean / (shape + mean), 0.0)
    shape = shape + 1.0  # size-biased (Palm), as in `wait_probability`
    pmf[:, 0] = np.where(nb, (1.0 - q) ** shape, np.exp(-mean))
    # P(N = k) = P(N = k - 1) x ratio(k), the ratios of all k at once; `multiply.accumulate` multiplies
    # them in the same order as a loop over k would, to the last bit.
    k = np.arange(1, width, dtype=float)[None, :]
    pmf[:, 1:] = np.where(nb[:, None], (shape[:, None] + k - 1) / k * q[:, None], mean[:, None] / k)
    return np.multiply.accumulate(pmf, axis=1)


def _tail_table(mean: np.ndarray, disp: np.ndarray, width: int) -> np.ndarray:
    """P(N >= k) for k < width (the chance an arrival finds a reserve of k used up)."""
    cdf = np.cumsum(_count_pmf(mean, disp, width), axis=1)
    tail = np.ones((len(mean), width))
    tail[:, 1:] = np.clip(1.0 - cdf[:, :-1], 0.0, 1.0)
    return tail


def _count_quantiles(mean: np.ndarray, disp: np.ndarray, level: float, width: int) -> np.ndarray:
    """The least k < width with P(N <= k) >= level, per row (width - 1 if none)."""
    cdf = np.cumsum(_count_pmf(mean, disp, width), axis=1)
    reached = cdf >= level
    return np.where(reached.any(axis=1), reached.argmax(axis=1), width - 1)


def _floor(pool: PoolConfig, cfg: PredictiveConfig) -> int:
    return pool.min_ready if cfg.floor is None else min(cfg.floor, pool.max_total)


def lead_time_s(pool: PoolConfig, config: Config, cfg: PredictiveConfig) -> float:
    """Expected boot on the cloud the pool launches on first, plus the buffer."""
    ranked = rank_clouds(pool, config, {c.name for c in config.clouds})
    boot = ranked[0].expected_boot_s if ranked else 120.0
    return boot + cfg.lead_buffer_s


def fit_pool(history: DemandHistory, cfg: PredictiveConfig, *, now: float, horizon_h: int,
             week_origin: float = 0.0, calendar: Sequence[CalendarEntry] = (),
             choice: tuple[str, float] | None = None) -> PoolForecast:
    """Fit one pool's model on its history and forecast `horizon_h` hours from the end of it.

    `week_origin`: a time (in the history's time base) at which a week starts, Monday 00:00.
    `choice`: (method, dispersion) chosen at an earlier refit, kept instead of backtesting again
    (ignored if the method does not fit this much history).
    """
    y = np.asarray(history.counts, dtype=float)
    n = len(y)
    t_hist = history.start + HOUR * np.arange(n)
    t_next = history.start + HOUR * (n + np.arange(horizon_h))
    cal = [c for c in calendar if c.pool == history.pool]
    in_cal = _covered(t_hist, cal)
    factor = _calendar_factor(y, t_hist, in_cal, cal)
    adj = np.where(in_cal, y / factor, y)
    dow = _weekday_shape(adj, t_hist, week_origin) if n >= 7 * 24 else np.ones(7)
    wd_hist = _weekday(t_hist, week_origin)
    adj = adj / dow[wd_hist]
    # Hourly counts of a quiet pool are mostly Poisson noise: smooth over neighbouring hours first, or
    # the seasonal terms learn single arrivals (one hour 2, the next 0) and the reserve follows them.
    sharp = adj  # unsmoothed, for a profile of a cycle sharper than the smoothing (jobs every 3 h)
    if n >= 5:
        adj = np.convolve(np.pad(adj, 2, mode="edge"), SMOOTHING, mode="valid")

    def undo(base: np.ndarray, wd: np.ndarray, cal_hours: np.ndarray) -> np.ndarray:
        """Back from the adjusted scale to expected counts: weekday shape and calendar put back."""
        out = np.clip(base, 0.0, None) * dow[wd]
        return np.where(cal_hours, out * factor, out)

    # Which model: the one that best forecast the last day(s) from the days before (Poisson deviance
    # of the raw counts), so a trace without a daily cycle gets the level model and one with a cycle
    # a seasonal one, judged from the data alone. Its errors there also measure the dispersion.
    methods = _methods(n)
    method, dispersion = methods[0], 0.0
    hw: dict[int, np.ndarray] = {}
    if choice is not None and choice[0] in methods:
        method, dispersion = choice
    elif n >= 72:
        k = 24
        folds = [n - k] + ([n - 2 * k] if n >= 96 else [])
        scores = {}
        if "holt-winters" in methods and cfg.engine == "recursion":
            hw = holt_winters_from(adj, cfg.smoothing_level, cfg.smoothing_seasonal,
                                   {**dict.fromkeys(folds, k), n: horizon_h})
        for m in methods:
            dev, errs = 0.0, []
            for end_i in folds:
                series = sharp if m == "sharp-profile" else adj
                base = hw[end_i] if m == "holt-winters" and hw else _forecast(m, series[:end_i], k, cfg)
                past = undo(base, wd_hist[end_i:end_i + k], in_cal[end_i:end_i + k])
                dev += _poisson_deviance(y[end_i:end_i + k], past)
                errs.append((y[end_i:end_i + k], past))
            scores[m] = (dev, errs)
        method = min(methods, key=lambda m: scores[m][0])
        if cfg.dispersion:
            # Errors beyond Poisson noise (bursts, shifts in volume) widen the reserve's distribution
            # (method of moments on the chosen model's backtest).
            obs = np.concatenate([e[0] for e in scores[method][1]])
            past = np.concatenate([e[1] for e in scores[method][1]])
            crowd = _crowd_dispersion(history, folds, k, past)
            if crowd is not None:
                dispersion = crowd
            elif past.mean() > 0:
                excess = float(np.mean((obs - past) ** 2) - past.mean())
                dispersion = min(4.0, max(0.0, excess / float(np.mean(past ** 2))))
    if method == "holt-winters" and not hw and cfg.engine == "recursion":
        hw = holt_winters_from(adj, cfg.smoothing_level, cfg.smoothing_seasonal, {n: horizon_h})
    base = hw[n] if method == "holt-winters" and hw else \
        _forecast(method, sharp if method == "sharp-profile" else adj, horizon_h, cfg)
    rates = undo(base, _weekday(t_next, week_origin), _covered(t_next, cal))
    total = sum(c for _, c in history.locations) or 0
    locs = tuple((loc, c / total) for loc, c in history.locations if c) if total else ()
    return PoolForecast(history.pool, now, float(t_next[0]) if horizon_h else history.start + n * HOUR,
                        tuple(rates.tolist()), locs, float(factor), method, dispersion=dispersion)


PROFILE_PRIOR_DAYS = 2.0
DISPERSIONS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


def _crowd_dispersion(history: DemandHistory, folds: Sequence[int], k: int, past: np.ndarray) -> float | None:
    """The dispersion under which the backtest's forecast best explains how many arrivals found 1, 2
    or 3 others within the lead time before them (the waits reserves of 1, 2, 3 would have seen).

    This calibrates the very quantity the sizer plans with, at the scale it matters: hourly counts
    miss clustering within the hour (a burst of five requests within a minute is an ordinary hour).
    None when not measured.
    """
    if len(history.crowded) != len(history.counts) or history.crowd_window_s <= 0:
        return None
    obs = np.zeros(3)
    for i in folds:
        obs += np.asarray(history.crowded[i:i + k], dtype=float).reshape(-1, 3).sum(axis=0)
    mean = past * history.crowd_window_s / HOUR
    grid = np.asarray(DISPERSIONS)
    # P(N >= 1, 2, 3) for every hour under every candidate dispersion at once: rows (dispersion, hour).
    tail = _tail_table(np.tile(mean, len(grid)), np.repeat(grid, len(mean)), 4)[:, 1:]
    model = (np.tile(past, len(grid))[:, None] * tail).reshape(len(grid), len(mean), 3).sum(axis=1)
    err = np.sum((obs[None, :] - model) ** 2 / (model + 1.0), axis=1)
    return float(grid[int(np.argmin(err))])  # the first (least) dispersion among equals


def _methods(n: int) -> tuple[str, ...]:
    """The models worth trying on `n` hours of history (the first is the default)."""
    if n >= 48:
        return ("holt-winters", "profile", "sharp-profile", "level")
    return ("seasonal-naive", "level")


def _forecast(method: str, adj: np.ndarray, horizon_h: int, cfg: PredictiveConfig) -> np.ndarray:
    """`horizon_h` hours ahead of the (adjusted, smoothed) series `adj` by one model.

    - holt-winters: additive level and daily season, both adapting (`holt_winters`);
    - profile: the mean day, recent days weighted more (half a weight per two days of age), the whole
      day scaled so its volume follows the last day's: a daily cycle whose shape is stable;
    - sharp-profile: the same on the unsmoothed counts (the caller passes them): a cycle within the
      day that smoothing would blur, e.g. jobs submitted every three hours;
    - level: no season, the last half day's mean: bursty demand without a daily cycle;
    - seasonal-naive: one to two days of history: the last day, lightly smoothed towards its mean.
    """
    n = len(adj)
    if method == "holt-winters":
        return holt_winters(adj, cfg.smoothing_level, cfg.smoothing_seasonal, horizon_h, engine=cfg.engine)
    if method == "level":
        return np.full(horizon_h, float(adj[-12:].mean()) if n else 0.0)
    if method in ("profile", "sharp-profile"):
        days = n // 24
        tail = adj[n - 24 * days:].reshape(days, 24)
        w = 0.5 ** ((days - 1 - np.arange(days)) / 2.0)
        # Shrunk towards the mean hour by PROFILE_PRIOR_DAYS of weight: each hour is seen only once a
        # day, and the sizer leaves the hours that look quietest without a VM, so an hour that was
        # quiet by chance would otherwise take the waits (the winner's curse).
        prof = ((w[:, None] * tail).sum(axis=0) + PROFILE_PRIOR_DAYS * tail.mean()) / (w.sum() + PROFILE_PRIOR_DAYS)
        if prof.sum() > 0:
            prof = prof * (0.5 + 0.5 * tail[-1].sum() / prof.sum())
        # Column c of `tail` holds history hours n - 24 days + c (mod 24): hour n + h is column h mod 24.
        return np.array([prof[h % 24] for h in range(horizon_h)])
    day = adj[-24:]
    prof = 0.7 * day + 0.3 * day.mean()
    return np.array([prof[i % 24] for i in range(horizon_h)])


def _poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """How badly expected counts `mu` explain observed `y` (0: perfectly); mu is floored at 0.01/h."""
    mu = np.maximum(mu, 0.01)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(y > 0, y * np.log(y / mu), 0.0)
    return float(2.0 * np.sum(term - (y - mu)))


def holt_winters(y: np.ndarray, alpha: float, gamma: float, horizon_h: int, *, period: int = 24,
                 engine: str = "recursion") -> np.ndarray:
    """Additive Holt-Winters (no trend) with fixed smoothing, initial level and season from the first
    two periods; the forecast of the next `horizon_h` (<= `period`) hours.

    engine "statsmodels" fits `statsmodels.tsa.holtwinters.ExponentialSmoothing` with the same known
    initial state; "recursion" runs the same update equations directly, some 50 times faster (a
    year of refits for five pools is then a second, not a minute). Tests hold them equal.
    """
    y = np.asarray(y, dtype=float)
    level0 = float(y[:2 * period].mean())
    season0 = y[:period] - level0
    if engine == "statsmodels":
        from statsmodels.tsa.holtwinters import ExponentialSmoothing

        model = ExponentialSmoothing(y, trend=None, seasonal="add", seasonal_periods=period,
                                     initialization_method="known", initial_level=level0,
                                     initial_seasonal=season0)
        fit = model.fit(smoothing_level=alpha, smoothing_seasonal=gamma, optimized=False)
        return np.asarray(fit.forecast(horizon_h), dtype=float)
    return holt_winters_from(y, alpha, gamma, {len(y): horizon_h}, period=period)[len(y)]


def holt_winters_from(y: np.ndarray, alpha: float, gamma: float, cuts: Mapping[int, int], *,
                      period: int = 24) -> dict[int, np.ndarray]:
    """`holt_winters` on `y[:cut]` for each cut (>= 2 periods) at once, `cuts[cut]` hours ahead each.

    The recursion on `y[:cut]` is the first `cut` steps of the one on `y` (same initial state from
    the first two periods), so one pass serves the backtest folds and the forecast alike.
    """
    y = np.asarray(y, dtype=float)
    level = float(y[:2 * period].mean())
    season = list(y[:period] - level)
    levels = {}
    for t, obs in enumerate(y.tolist()):
        if t in cuts:
            levels[t] = level
        s = season[t]
        season.append(gamma * (obs - level) + (1.0 - gamma) * s)
        level = alpha * (obs - s) + (1.0 - alpha) * level
    levels[len(y)] = level
    seasons = np.asarray(season)
    return {cut: levels[cut] + seasons[cut + np.arange(k) % period] for cut, k in cuts.items()}


def _weekday(t: np.ndarray, week_origin: float) -> np.ndarray:
    return (np.floor((t - week_origin) / DAY).astype(int)) % 7


def _covered(t: np.ndarray, cal: Sequence[CalendarEntry]) -> np.ndarray:
    out = np.zeros(len(t), dtype=bool)
    for c in cal:
        out |= (t >= c.start) & (t < c.end)
    return out


def _calendar_factor(y: np.ndarray, t: np.ndarray, in_cal: np.ndarray, cal: Sequence[CalendarEntry]) -> float:
    """Demand in past calendar hours over the same hours of the day outside the calendar; else declared."""
    if not cal:
        return 1.0
    if in_cal.sum() >= 3 and (~in_cal).sum() >= 24:
        hod = ((t // HOUR) % 24).astype(int)
        normal = np.array([y[~in_cal & (hod == h)].mean() if (~in_cal & (hod == h)).any() else np.nan
                           for h in range(24)])
        expected = normal[hod[in_cal]]
        ok = ~np.isnan(expected)
        if ok.any() and expected[ok].sum() > 0:
            return max(0.1, float(y[in_cal][ok].sum() / expected[ok].sum()))
    return max(c.factor for c in cal)


def _weekday_shape(y: np.ndarray, t: np.ndarray, week_origin: float) -> np.ndarray:
    """Relative demand per weekday, shrunk towards 1 where few hours were seen."""
    wd = _weekday(t, week_origin)
    mean = y.mean()
    if mean <= 0:
        return np.ones(7)
    out = np.ones(7)
    for d in range(7):
        sel = y[wd == d]
        k = 24.0  # one day's worth of prior weight on "no weekday effect"
        out[d] = max(0.05, (sel.sum() + k * mean) / (len(sel) + k) / mean)
    return out


def _target_and_change(f: PoolForecast, now: float, lead: float, floor: int, cap: int, until: float
                       ) -> tuple[int, float]:
    """The pool's reserve at `now` and the next time it differs (at most `until`).

    Within hour j the reserve is hour j's, except in its last `lead` seconds, where it is already
    hour j+1's if that is larger: VMs launched then are ready when that hour's demand comes. A pass
    is needed only where the value changes, not at every hour boundary and lead point.
    """
    def at(j: int) -> int:
        r = f.reserve_at(f.start + j * HOUR + 1.0)
        return min(cap, max(floor, floor if r is None else r))

    j = int(math.floor((now - f.start) / HOUR))
    hour_end = f.start + (j + 1) * HOUR
    here, ahead = at(j), at(j + 1)
    target = max(here, ahead) if now >= hour_end - lead else here
    while True:
        # The segment boundaries of hour j after now: its lead point, then its end.
        for t, value in ((hour_end - lead, max(here, ahead)), (hour_end, ahead)):
            if t > now and value != target:
                return target, min(t, until)
        if hour_end >= until or j > len(f.reserves):  # past the plan: the floor until the next refit
            return target, until
        j += 1
        hour_end += HOUR
        here, ahead = ahead, at(j + 1)


def predict_targets(histories: Mapping[str, DemandHistory], config: Config, cfg: PredictiveConfig, *,
                    now: float, memory: ForecastMemory | None = None, week_origin: float = 0.0,
                    calendar: Sequence[CalendarEntry] = ()) -> Sizing:
    """Reserves per pool from the forecast; refits (and notes it) when a refit time has come.

    `histories` need only be current when `needs_refit(memory, now)`: hourly counts of complete
    hours up to `refit_boundary(now, cfg)`, the last `cfg.window_s` of them.
    """
    memory = memory or ForecastMemory()
    notes: list[Note] = []
    if needs_refit(memory, now):
        boundary = refit_boundary(now, cfg)
        # The budget of waits is spread over a week ahead (one multiplier for weekdays, nights and
        # weekends alike), at least over the hours until the next refit.
        horizon = max(int(math.ceil(cfg.horizon_s / HOUR)), int(math.ceil(cfg.refit_s / HOUR)) + 2)
        forecasts, fallback = {}, set()
        leads = {p.name: lead_time_s(p, config, cfg) for p in config.pools}
        # Choose models again on the first refit past each multiple of select_s; else keep them.
        select = math.floor(boundary / cfg.select_s) != math.floor((boundary - cfg.refit_s) / cfg.select_s)
        for pool in config.pools:
            h = histories.get(pool.name)
            span = len(h.counts) * HOUR if h is not None else 0.0
            if h is None or span < cfg.min_history_s:
                fallback.add(pool.name)
                notes.append(Note(pool.name, "forecast: too little history, reactive reserve (min_ready)",
                                  {"history_h": span / HOUR, "needed_h": cfg.min_history_s / HOUR,
                                   "fallback": "reactive", "min_ready": pool.min_ready}))
                continue
            old = memory.forecasts.get(pool.name)
            choice = None if select or old is None else (old.method, old.dispersion)
            forecasts[pool.name] = fit_pool(h, cfg, now=now, horizon_h=horizon, week_origin=week_origin,
                                            calendar=calendar, choice=choice)
        # One budget of waits for all forecast pools (the facility's service level), unless per pool.
        pools = [p for p in config.pools if p.name in forecasts]
        groups = [[p] for p in pools] if cfg.per_pool_budget else [pools]
        for group in groups:
            plans = plan_reserves_jointly(
                [(forecasts[p.name].rates, leads[p.name], _floor(p, cfg), p.max_total,
                  forecasts[p.name].dispersion) for p in group],
                cfg.service_level)
            for p, plan in zip(group, plans, strict=True):
                f = forecasts[p.name] = replace(forecasts[p.name], reserves=plan)
                notes.append(Note(p.name, "forecast: refitted", {
                    "history_h": len(histories[p.name].counts), "method": f.method,
                    "calendar_factor": round(f.calendar_factor, 3),
                    "next_hours": [round(r, 3) for r in f.rates[:6]], "reserves": list(plan[:6])}))
        memory = ForecastMemory(forecasts, frozenset(fallback), boundary + cfg.refit_s, leads)
    targets: dict[str, int] = {}
    locations: dict[str, tuple[tuple[str, float], ...]] = {}
    next_change = memory.next_refit
    for pool in config.pools:
        floor = _floor(pool, cfg)
        fc = memory.forecasts.get(pool.name)
        if fc is None:
            targets[pool.name] = pool.min_ready
            continue
        lead = memory.leads.get(pool.name)
        lead = lead_time_s(pool, config, cfg) if lead is None else lead
        target, change = _target_and_change(fc, now, lead, floor, pool.max_total, memory.next_refit)
        targets[pool.name] = target
        next_change = min(next_change, change)
        if fc.locations:
            locations[pool.name] = fc.locations
    return Sizing(targets, locations, memory, tuple(notes), next_change)
