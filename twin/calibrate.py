"""Calibration: a scenario fitted to an event log (the twin's own `events.jsonl` now, live usage logs
later), so a planner can replay "last month" and its what-ifs.

Per pool it fits the arrival rate with its daily and weekly shape (the generator's model:
rate x daily[hour] x weekly[weekday], scaled so the expected arrivals equal the observed ones), the
users' locations, session lengths (lognormal, from assign to release or abandon), the abandonment
rates and how long abandoned computations run; per cloud, boot times (lognormal) and the boot
failure rate, with the cost and region from the log's header.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core import events as ev
from core.events import Event, EventFormatError, parse_lines

DAY, HOUR = 86400.0, 3600.0
UNIX_MONDAY = 4 * DAY  # 1970-01-05 00:00 UTC was a Monday


class CalibrationError(ValueError):
    """A log that cannot be calibrated from; the message names the file and why."""


def read_events(path: str | Path) -> list[Event]:
    p = Path(path)
    try:
        with open(p, encoding="utf-8") as f:
            return parse_lines(f, source=str(p))
    except FileNotFoundError:
        raise CalibrationError(f"{p}: no such event log") from None
    except OSError as e:
        raise CalibrationError(f"{p}: cannot read ({e.strerror})") from None
    except EventFormatError as e:
        raise CalibrationError(str(e)) from None


def _lognormal(values: Sequence[float]) -> tuple[float, float] | None:
    v = np.asarray([x for x in values if x > 0], dtype=float)
    if len(v) < 2:
        return None
    logs = np.log(v)
    return float(np.exp(np.median(logs))), float(logs.std(ddof=1))


def calibrate(events: Iterable[Event], *, source: str = "events", name: str | None = None) -> dict[str, Any]:
    """A scenario (as a YAML-ready dict) fitted to `events`."""
    evs = sorted(events, key=lambda e: e.t)
    header = next((e for e in evs if e.kind == ev.RUN), None)
    hd = header.details if header else {}
    reqs = [e for e in evs if e.kind == ev.REQUEST]
    if not reqs:
        raise CalibrationError(f"{source}: no request events to fit arrivals to")
    start = float(hd.get("start", evs[0].t))
    end = float(hd.get("end", evs[-1].t))
    if end <= start:
        raise CalibrationError(f"{source}: the log spans no time (start {start}, end {end})")
    unix = hd.get("time_base") == "unix"
    # Sim time 0 starts the week on `start_weekday` (0 = Monday); unix times know their weekday.
    week_origin = UNIX_MONDAY if unix else start
    start_weekday = int(((start - week_origin) // DAY) % 7) if unix else 0
    pools = list(hd.get("pools") or sorted({e.pool for e in reqs if e.pool}))

    by_pool: dict[str, list[Event]] = {}
    for e in evs:
        if e.pool:
            by_pool.setdefault(e.pool, []).append(e)
    out_pools = []
    for pool in pools:
        pe = by_pool.get(pool, [])
        out_pools.append({"name": pool, "demand": _demand(pe, start, end, week_origin)})

    clouds = []
    header_clouds = hd.get("clouds") or {}
    names = list(header_clouds) or sorted({e.cloud for e in evs if e.cloud})
    for c in names:
        boots = [float(e.details.get("boot_s", 0)) for e in evs if e.kind == ev.READY and e.cloud == c]
        launches = sum(1 for e in evs if e.kind == ev.LAUNCH and e.cloud == c)
        failed = sum(1 for e in evs if e.kind == ev.BOOT_FAILED and e.cloud == c)
        info = header_clouds.get(c, {})
        cloud: dict[str, Any] = {"name": c, "region": info.get("region", "home"),
                                 "cost_per_vm_hour": float(info.get("cost_per_hour", 0.0))}
        fit = _lognormal(boots)
        if fit:
            cloud["boot_median"] = round(fit[0], 3)
            cloud["boot_sigma"] = round(fit[1], 4)
        if launches:
            cloud["boot_failure_rate"] = round(failed / launches, 5)
        clouds.append(cloud)
    return {"name": name or f"calibrated-{hd.get('scenario', 'log')}",
            "description": f"Calibrated from {source}", "seed": int(hd.get("seed", 1)),
            "duration": float(end - start), "start_weekday": start_weekday, "clouds": clouds, "pools": out_pools}


def _demand(pe: list[Event], start: float, end: float, week_origin: float) -> dict[str, Any]:
    reqs = [e for e in pe if e.kind == ev.REQUEST]
    t = np.asarray([e.t for e in reqs], dtype=float)
    hours = np.arange(start, end, HOUR)
    exposure = np.minimum(hours + HOUR, end) - hours  # fraction of the last hour observed
    hod_all = ((hours // HOUR) % 24).astype(int)
    dow_all = (((hours - week_origin) // DAY) % 7).astype(int)
    daily = np.ones(24)
    weekly = np.ones(7)
    if len(t):
        hod = ((t // HOUR) % 24).astype(int)
        dow = (((t - week_origin) // DAY) % 7).astype(int)
        counts_h = np.bincount(hod, minlength=24)
        counts_d = np.bincount(dow, minlength=7)
        # Two rounds of alternating fits of the multiplicative model (exposure-weighted).
        for _ in range(3):
            expo_h = np.bincount(hod_all, weights=exposure * weekly[dow_all], minlength=24)
            daily = np.divide(counts_h, expo_h, out=np.zeros(24), where=expo_h > 0)
            expo_d = np.bincount(dow_all, weights=exposure * daily[hod_all], minlength=7)
            seen = expo_d > 0
            weekly = np.divide(counts_d, expo_d, out=np.ones(7), where=seen)
            if seen.any():
                weekly[~seen] = weekly[seen].mean()  # weekdays the log never saw: their average
    scale_d = daily.max() or 1.0
    scale_w = weekly.max() or 1.0
    daily, weekly = daily / scale_d, weekly / scale_w
    expected = float((exposure * daily[hod_all] * weekly[dow_all]).sum())
    rate = len(t) / expected * HOUR if expected > 0 else 0.0  # exposure is in seconds
    if daily.max() <= 0:
        daily = np.ones(24)
    locs: dict[str, int] = {}
    for e in reqs:
        loc = str(e.details.get("location", "home"))
        locs[loc] = locs.get(loc, 0) + 1
    # Sessions: from assign to the user's release or walking away.
    assigned: dict[str, float] = {}
    sessions, abandoned, released, busy = [], 0, 0, []
    for e in pe:
        if e.kind == ev.ASSIGN and e.vm:
            assigned[e.vm] = e.t
        elif e.kind in (ev.RELEASE, ev.ABANDON) and e.vm in assigned:
            sessions.append(e.t - assigned.pop(e.vm))
            if e.kind == ev.ABANDON:
                abandoned += 1
                b = float(e.details.get("busy_s", 0) or 0)
                if b > 0:
                    busy.append(b)
            else:
                released += 1
    demand: dict[str, Any] = {"rate_per_hour": round(rate, 6), "daily": [round(float(x), 6) for x in daily],
                              "weekly": [round(float(x), 6) for x in weekly],
                              "locations": {k: round(v / max(1, len(reqs)), 6) for k, v in sorted(locs.items())}}
    fit = _lognormal(sessions)
    if fit:
        demand["session"] = {"median": round(fit[0], 3), "sigma": round(fit[1], 4)}
    ended = abandoned + released
    if ended:
        demand["abandon_rate"] = round(abandoned / ended, 5)
        demand["busy_abandon_rate"] = round(len(busy) / abandoned, 5) if abandoned else 0.0
    bfit = _lognormal(busy)
    if bfit:
        demand["busy"] = {"median": round(bfit[0], 3), "sigma": round(bfit[1], 4)}
    if not math.isfinite(demand["rate_per_hour"]):
        demand["rate_per_hour"] = 0.0
    return demand
