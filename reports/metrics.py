"""Headline metrics of a run, computed from its events alone (twin runs and live logs alike).

`compute_metrics(events)` returns a JSON-ready dict; `dumps_metrics` writes it with sorted keys and
floats rounded to 6 significant digits, so two identical runs give byte-identical `metrics.json`.

Definitions (times in the log's seconds, VM-hours in hours):
- `requests`, `assigned`: request and assign events; `unserved`: per pool, requests not matched by
  an assign by the log's end (summed over pools, never negative).
- `wait_s`: `p50`, `p95`, `p99`, `max`, `mean`, `count` of the assign events' `details.wait_s`
  (a user given a ready VM waited 0 s and counts as 0). Percentiles use numpy's default (linear)
  method. With no waits, every value is null and `count` is 0.
- `vm_hours`: by state (`booting`, `ready`, `allocated`, `abandoned`) and `total`, from each VM's
  lifecycle as `reports.timeline` reconstructs it. `ready` VM-hours are the reserve's idle cost.
- `cost`: VM-hours x the `cost_per_hour` of the VM's launch event, else the run header's
  `clouds[cloud].cost_per_hour`, else 0.
- `reclaimed`: terminations for `idle` or `max_age`; `terminations`: count by reason.
- `warnings`, `failed_boots`, `launch_failures`, `api_errors`, `releases`, `abandons`: counts.
- `per_cloud[cloud]`: `launches`, `share` (of all launches; null with none), `vm_hours`, `cost`,
  `failed_boots`, `launch_failures`, `api_errors`.
- `per_pool[pool]`: `requests`, `assigned`, `unserved`, `wait_s` (`p50`, `p95`, `max`), `vm_hours`,
  `cost`, `launches`.
- `horizon_h`: hours from the log's start (header `start`, else first event) to its end (header
  `end`, else last event); `start_s`, `end_s`: those bounds; `events`: count by kind.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from core.events import Event
from reports.timeline import STATES, Scan, scan

RECLAIM_REASONS = frozenset({"idle", "max_age"})

# The headline rows shown in the report's table and side by side by `daaas twin compare`:
# (label, path into the metrics dict).
HEADLINE: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("requests", ("requests",)),
    ("unserved", ("unserved",)),
    ("wait p50 (s)", ("wait_s", "p50")),
    ("wait p95 (s)", ("wait_s", "p95")),
    ("wait p99 (s)", ("wait_s", "p99")),
    ("wait max (s)", ("wait_s", "max")),
    ("VM-hours booting", ("vm_hours", "booting")),
    ("VM-hours ready (idle)", ("vm_hours", "ready")),
    ("VM-hours allocated", ("vm_hours", "allocated")),
    ("VM-hours abandoned", ("vm_hours", "abandoned")),
    ("VM-hours total", ("vm_hours", "total")),
    ("cost", ("cost",)),
    ("reclaimed", ("reclaimed",)),
    ("failed boots", ("failed_boots",)),
    ("launch failures", ("launch_failures",)),
    ("API errors", ("api_errors",)),
)


def round_sig(x: float, digits: int = 6) -> float:
    """`x` rounded to `digits` significant digits (so float noise never reaches metrics.json)."""
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def _percentiles(values: list[float], qs: tuple[float, ...]) -> list[float | None]:
    if not values:
        return [None] * len(qs)
    return [round_sig(float(v)) for v in np.percentile(np.asarray(values, dtype=float), qs)]


def _wait_summary(values: list[float]) -> dict[str, Any]:
    p50, p95, p99 = _percentiles(values, (50, 95, 99))
    if values:
        mx: float | None = round_sig(float(max(values)))
        mean: float | None = round_sig(math.fsum(values) / len(values))
    else:
        mx = mean = None
    return {"p50": p50, "p95": p95, "p99": p99, "max": mx, "mean": mean, "count": len(values)}


def _vm_hours(acc: list[float]) -> dict[str, float]:
    out = {s: round_sig(acc[i] / 3600.0) for i, s in enumerate(STATES)}
    out["total"] = round_sig(math.fsum(acc[:4]) / 3600.0)
    return out


def compute_metrics(events: Iterable[Event]) -> dict[str, Any]:
    """The run's metrics from its events (see the module docstring); JSON-ready, deterministic."""
    return metrics_from_scan(scan(events))


def metrics_from_scan(sc: Scan) -> dict[str, Any]:
    """`compute_metrics` from a `scan` already made (the report makes one pass for everything)."""
    all_waits = [w for pool in sorted(sc.waits) for w in sc.waits[pool]]
    total_launches = sum(c[0] for c in sc.cloud_counts.values())
    total_acc = [math.fsum(a[i] for a in sc.cloud_acc.values()) for i in range(5)]

    per_cloud: dict[str, Any] = {}
    for cloud in sorted(sc.cloud_acc):
        acc, n = sc.cloud_acc[cloud], sc.cloud_counts[cloud]
        per_cloud[cloud] = {
            "launches": n[0],
            "share": round_sig(n[0] / total_launches) if total_launches else None,
            "vm_hours": _vm_hours(acc),
            "cost": round_sig(acc[4] / 3600.0),
            "failed_boots": n[1],
            "launch_failures": n[2],
            "api_errors": n[3],
        }

    per_pool: dict[str, Any] = {}
    unserved = 0
    for pool in sorted(sc.pool_acc):
        acc, n = sc.pool_acc[pool], sc.pool_counts[pool]
        w = _wait_summary(sc.waits.get(pool, []))
        pool_unserved = max(0, n[0] - n[1])
        unserved += pool_unserved
        per_pool[pool] = {
            "requests": n[0],
            "assigned": n[1],
            "unserved": pool_unserved,
            "wait_s": {"p50": w["p50"], "p95": w["p95"], "max": w["max"]},
            "vm_hours": _vm_hours(acc),
            "cost": round_sig(acc[4] / 3600.0),
            "launches": n[2],
        }

    k = sc.by_kind
    return {
        "requests": k.get("request", 0),
        "assigned": k.get("assign", 0),
        "unserved": unserved,
        "wait_s": _wait_summary(all_waits),
        "vm_hours": _vm_hours(total_acc),
        "cost": round_sig(total_acc[4] / 3600.0),
        "reclaimed": sum(n for r, n in sc.terminations.items() if r in RECLAIM_REASONS),
        "terminations": dict(sorted(sc.terminations.items())),
        "warnings": k.get("warn", 0),
        "failed_boots": k.get("boot_failed", 0),
        "launch_failures": k.get("launch_failed", 0),
        "api_errors": k.get("api_error", 0),
        "launches": k.get("launch", 0),
        "releases": k.get("release", 0),
        "abandons": k.get("abandon", 0),
        "per_cloud": per_cloud,
        "per_pool": per_pool,
        "horizon_h": round_sig(max(0.0, sc.end - sc.start) / 3600.0),
        "start_s": round_sig(sc.start, 12),
        "end_s": round_sig(sc.end, 12),
        "events": dict(sorted(k.items())),
    }


def dumps_metrics(metrics: Mapping[str, Any]) -> str:
    """The canonical text of metrics.json: sorted keys, two-space indent, trailing newline."""
    return json.dumps(metrics, sort_keys=True, indent=2, allow_nan=False) + "\n"


def lookup(metrics: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at `path` in a metrics dict, or None where any step is missing."""
    v: Any = metrics
    for key in path:
        if not isinstance(v, Mapping) or key not in v:
            return None
        v = v[key]
    return v


def check_event(e: Event) -> str | None:
    """Why `e`'s details cannot be used for metrics (a reason for the error message), or None.

    `core.events` checks the envelope; this checks the few details fields the metrics read, so a
    log with, say, a text `wait_s` fails at its line instead of deep inside a sum.
    """
    d = e.details
    if e.kind == "assign":
        w = d.get("wait_s")
        if w is not None and (not _is_number(w) or w < 0):
            return "details.wait_s must be a non-negative number of seconds"
    elif e.kind == "launch":
        c = d.get("cost_per_hour")
        if c is not None and (not _is_number(c) or c < 0):
            return "details.cost_per_hour must be a non-negative number"
    elif e.kind == "run":
        for key in ("start", "end"):
            if d.get(key) is not None and not _is_number(d[key]):
                return f"details.{key} must be a number of seconds"
        clouds = d.get("clouds")
        if clouds is not None:
            if not isinstance(clouds, dict):
                return "details.clouds must be an object"
            for name, spec in clouds.items():
                c = spec.get("cost_per_hour") if isinstance(spec, dict) else None
                if not isinstance(spec, dict) or (c is not None and (not _is_number(c) or c < 0)):
                    return f"details.clouds.{name}.cost_per_hour must be a non-negative number"
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
