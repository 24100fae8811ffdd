"""The twin's shell around `core.forecast`: it counts requests per pool and hour from the snapshots
it sees (and how many found 1, 2 or 3 others of the pool within the lead time before them: how
bursty demand is at the scale that matters), passes that history to the pure sizer at refits, keeps
the sizer's memory, and logs its notes as `policy` events. Also the scenario's `policy.predictive`
section.

    policy:
      predictive:
        enabled: true
        service_level: 0.95     # P(arrivals within the lead time <= reserve)
        lead_buffer: 60s        # lead time = the pool's expected boot + this
        refit: 6h               # refit period (aligned to multiples of it)
        history: 14d            # fitted on the last this much
        min_history: 24h        # less: the reactive reserve (said in the events)
        floor: 0                # the least reserve (default: each pool's min_ready)
        shadow: false           # true: only log what the forecast would do
        per_pool: false         # true: each pool meets the service level alone (default: all requests)
        engine: recursion       # or statsmodels (the same Holt-Winters numbers, slower)
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from core import events as ev
from core.forecast import (
    DAY,
    HOUR,
    CalendarEntry,
    DemandHistory,
    ForecastMemory,
    PredictiveConfig,
    lead_time_s,
    needs_refit,
    predict_targets,
    refit_boundary,
)
from core.snapshot import Snapshot
from twin.scenario import POLICY_SECTIONS, Scenario, _Ctx, _duration, _mapping, _number

_KEYS = ["enabled", "service_level", "lead_buffer", "refit", "history", "min_history", "floor", "shadow", "per_pool",
         "engine"]


class PredictiveSizer:
    """`sizer(snapshot) -> targets` for `twin.model.Twin`, with `next_change` and `locations`.

    Its targets change only with time (hour boundaries, lead points, refits: `next_change`) and with
    requests (which poke a pass anyway), never with a boot finishing or a VM released: hence
    `follows_vms = False`, which tells the twin those events need no extra pass.
    """

    follows_vms: ClassVar[bool] = False

    def __init__(self, scenario: Scenario, cfg: PredictiveConfig, *, emit: Callable[..., None] | None = None):
        self.config = scenario.config
        self.cfg = cfg
        self.memory = ForecastMemory()
        self.locations: dict[str, tuple[tuple[str, float], ...]] | None = None
        # The week starts on Monday: sim time 0 is `start_weekday` days into it.
        self.week_origin = -scenario.start_weekday * DAY
        cal = scenario.extra.get("calendar")
        self.calendar: tuple[CalendarEntry, ...] = tuple(cal.entries) if cal is not None else ()
        self._emit = emit
        self._seen: set[str] = set()
        self._counts: dict[str, list[int]] = {p.name: [] for p in self.config.pools}  # per hour from 0
        # Per hour, how many requests found at least 1, 2, 3 others of the pool within the lead time.
        self._crowded: dict[str, tuple[list[int], list[int], list[int]]] = {
            p.name: ([], [], []) for p in self.config.pools}
        self._recent: dict[str, deque[float]] = {p.name: deque() for p in self.config.pools}
        self._window = {p.name: lead_time_s(p, self.config, cfg) for p in self.config.pools}
        self._locs: dict[str, dict[str, list[int]]] = {p.name: {} for p in self.config.pools}  # per hour
        self._next_change = -math.inf
        self._targets: dict[str, int] = {}
        self._shown: dict[str, int] = {}

    def observe(self, snapshot: Snapshot) -> None:
        """Count requests not seen before (every request is pending in at least one snapshot)."""
        for r in snapshot.requests:
            if r.id in self._seen:
                continue
            self._seen.add(r.id)
            h = int(r.requested_at // HOUR)
            counts = self._counts.get(r.pool)
            if counts is None:
                continue
            crowded = self._crowded[r.pool]
            if h >= len(counts):
                for column in crowded:
                    column.extend([0] * (h + 1 - len(counts)))
                counts.extend([0] * (h + 1 - len(counts)))
            counts[h] += 1
            recent, window = self._recent[r.pool], self._window[r.pool]
            while recent and recent[0] < r.requested_at - window:
                recent.popleft()
            for i in range(min(3, len(recent))):
                crowded[i][h] += 1
            recent.append(r.requested_at)
            per = self._locs[r.pool].setdefault(r.location, [])
            if h >= len(per):
                per.extend([0] * (h + 1 - len(per)))
            per[h] += 1

    def histories(self, now: float) -> dict[str, DemandHistory]:
        """Complete hours up to the refit boundary, the last `window` of them, from the first request on."""
        end_h = int(refit_boundary(now, self.cfg) // HOUR)
        out = {}
        for pool, counts in self._counts.items():
            if not counts:
                continue
            # History starts at the twin's start (hour 0), not at the first request: quiet hours count.
            first = max(0, end_h - int(self.cfg.window_s // HOUR))
            hours = range(first, end_h)
            locs = {loc: sum(per[first:end_h]) for loc, per in self._locs[pool].items()}
            pad = (0,) * (len(hours) - len(counts[first:end_h]))
            out[pool] = DemandHistory(pool, first * HOUR, tuple(counts[first:end_h]) + pad,
                                      tuple(sorted((loc, c) for loc, c in locs.items() if c)),
                                      tuple(zip(*(c[first:end_h] for c in self._crowded[pool]), strict=True))
                                      + ((0, 0, 0),) * len(pad), self._window[pool])
        return out

    def __call__(self, snapshot: Snapshot) -> dict[str, int] | None:
        self.observe(snapshot)
        now = snapshot.now
        if now >= self._next_change:
            hist = self.histories(now) if needs_refit(self.memory, now) else {}
            sizing = predict_targets(hist, self.config, self.cfg, memory=self.memory, now=now,
                                     week_origin=self.week_origin, calendar=self.calendar)
            self.memory = sizing.memory
            self._next_change = sizing.next_change
            self._targets = dict(sizing.targets)
            if not self.cfg.shadow:
                self.locations = dict(sizing.locations) or None
            for note in sizing.notes:
                self._note(note.pool, note.message, dict(note.details))
            self._log_targets(now)
        return None if self.cfg.shadow else self._targets

    def next_change(self, now: float) -> float:
        """When the targets may change next: the twin passes then even if nothing else is due."""
        return self._next_change

    def _log_targets(self, now: float) -> None:
        for pool in self.config.pools:
            t = self._targets.get(pool.name, pool.min_ready)
            if self._shown.get(pool.name) != t:
                self._shown[pool.name] = t
                fallback = pool.name in self.memory.fallback
                self._note(pool.name, "forecast: reserve" + (" (shadow)" if self.cfg.shadow else ""), {
                    "target": t, "reactive": pool.min_ready, "shadow": self.cfg.shadow, "fallback": fallback})

    def _note(self, pool: str, message: str, details: dict[str, Any]) -> None:
        if self._emit is not None:
            self._emit(ev.POLICY, pool=pool, details={"message": message, **details})


def validate_predictive(ctx: _Ctx, raw: Any, path: str) -> PredictiveConfig:
    m = _mapping(ctx, raw if raw is not None else {}, path, _KEYS)
    for key in ("enabled", "shadow", "per_pool"):
        if key in m and not isinstance(m[key], bool):
            raise ctx.fail(f"{path}.{key}", f"expected true or false, got {m[key]!r}")
    floor = m.get("floor")
    engine = m.get("engine", "recursion")
    if engine not in ("recursion", "statsmodels"):
        raise ctx.fail(path + ".engine", f"expected recursion or statsmodels, got {engine!r}")
    cfg = PredictiveConfig(
        enabled=m.get("enabled", True),
        service_level=_number(ctx, m.get("service_level", 0.95), path + ".service_level", strict_min=True,
                              maximum=0.9999),
        lead_buffer_s=_duration(ctx, m.get("lead_buffer", 60), path + ".lead_buffer"),
        refit_s=_duration(ctx, m.get("refit", "6h"), path + ".refit", positive=True),
        window_s=_duration(ctx, m.get("history", "14d"), path + ".history", positive=True),
        min_history_s=_duration(ctx, m.get("min_history", "24h"), path + ".min_history"),
        shadow=m.get("shadow", False), per_pool_budget=m.get("per_pool", False), engine=engine,
        floor=None if floor is None else int(_number(ctx, floor, path + ".floor", integer=True)))
    if cfg.refit_s % HOUR:
        raise ctx.fail(path + ".refit", "must be a whole number of hours")
    if cfg.window_s < cfg.min_history_s:
        raise ctx.fail(path + ".history", "must be at least min_history")
    return cfg


POLICY_SECTIONS["predictive"] = validate_predictive
