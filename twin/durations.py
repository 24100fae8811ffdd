"""Durations in scenario files: a number of seconds, or a string like "90s", "15m", "2h", "7d", "1d6h"."""
from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value: object) -> float:
    """Seconds from a number or a duration string; ValueError with the reason otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration (seconds, or like '2h', '15m', '7d'), got a boolean")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration (seconds, or like '2h', '15m', '7d'), got {type(value).__name__}")
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a duration (seconds, or like '2h', '15m', '7d', '1d6h')") from None
    return total
