"""The facility calendar: scheduled beam-times and experiments per pool (`calendar:` in a scenario).

    calendar:
      - {pool: mantid, start: 2d8h, end: 2d20h, factor: 3, name: "beam-time 2024/17"}

The predictive sizer uses it as an exogenous input (`core.forecast.CalendarEntry`): a multiplier on
forecast demand in calendar hours, learned from past calendar hours once there are some, the
declared `factor` until then. It does not change demand by itself: a scenario's `surges` do that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.forecast import CalendarEntry
from twin.scenario import EXTRA_SECTIONS, _Ctx, _list, _number, _window


@dataclass(frozen=True)
class Calendar:
    entries: tuple[CalendarEntry, ...]


def validate_calendar(ctx: _Ctx, raw: Any, path: str) -> Calendar:
    out = []
    for i, item in enumerate(_list(ctx, raw, path)):
        p = f"{path}[{i}]"
        m, start, end = _window(ctx, item, p, ["pool", "start", "end", "factor", "name"])
        if "pool" not in m or not isinstance(m["pool"], str):
            raise ctx.fail(p + ".pool", "expected the name of a pool")
        if ctx.pools and m["pool"] not in ctx.pools:
            raise ctx.fail(p + ".pool", f"no pool named {m['pool']!r} in this scenario")
        out.append(CalendarEntry(m["pool"], start, end, _number(ctx, m.get("factor", 2.0), p + ".factor",
                                                                  strict_min=True), str(m.get("name", ""))))
    return Calendar(tuple(sorted(out, key=lambda e: e.start)))


EXTRA_SECTIONS["calendar"] = validate_calendar
