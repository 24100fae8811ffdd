"""Scenarios: YAML files describing demand, clouds and policy, validated against one schema.

Every error names the file, the field path and the reason (`ScenarioError`), and is raised before
anything runs or is written. `load_scenario(path, overrides=...)` applies `KEY=VALUE` overrides
(from `daaas twin compare --set` or sweeps) to the raw YAML first, so they are validated the same way.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.config import CloudConfig, Config, HealthConfig, MaintenanceWindow, PolicyConfig, PoolConfig
from twin.cloud import DOWN, ERRORS, SLOW, Outage, SimCloudSpec
from twin.durations import parse_duration


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file, the field path and the reason."""


DAILY_PROFILES = {
    "flat": (1.0,) * 24,
    # A facility's working day: quiet nights, a morning ramp, a lunch dip, evening tail.
    "office": (0.05, 0.03, 0.02, 0.02, 0.03, 0.05, 0.15, 0.4, 0.9, 1.0, 1.0, 0.9,
               0.7, 0.9, 1.0, 0.95, 0.8, 0.55, 0.35, 0.25, 0.2, 0.15, 0.1, 0.07),
    # Users spread over time zones: a broad plateau.
    "global": (0.4, 0.35, 0.3, 0.3, 0.35, 0.45, 0.6, 0.8, 0.95, 1.0, 1.0, 0.95,
               0.9, 0.95, 1.0, 1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.45),
}
WEEKLY_PROFILES = {
    "flat": (1.0,) * 7,
    "weekdays": (1.0, 1.0, 1.0, 1.0, 0.9, 0.3, 0.2),  # Monday first
}


@dataclass(frozen=True)
class Surge:
    """A period of higher demand (a beam-time), multiplying the arrival rate by `factor`."""

    start: float
    end: float
    factor: float


@dataclass(frozen=True)
class DemandSpec:
    """How one pool's users arrive and behave."""

    rate_per_hour: float  # mean arrivals an hour at the profiles' peak (multiplier 1.0)
    daily: tuple[float, ...] = DAILY_PROFILES["office"]
    weekly: tuple[float, ...] = WEEKLY_PROFILES["weekdays"]
    locations: tuple[tuple[str, float], ...] = (("home", 1.0),)
    session_median_s: float = 2 * 3600.0
    session_sigma: float = 0.8
    abandon_rate: float = 0.05  # share of sessions the user walks away from without releasing
    busy_abandon_rate: float = 0.3  # share of abandoned sessions left running a long computation
    busy_median_s: float = 6 * 3600.0
    busy_sigma: float = 0.5
    surges: tuple[Surge, ...] = ()


@dataclass(frozen=True)
class Scenario:
    """A validated scenario, ready for `twin.build_twin`."""

    name: str
    source: str  # the file it came from
    seed: int
    duration_s: float
    start_weekday: int  # 0 = Monday, for the weekly cycle
    config: Config
    clouds: tuple[SimCloudSpec, ...]
    demand: Mapping[str, DemandSpec]
    agent_heartbeat_s: float = 900.0
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # sections other parts add (trace, calendar...)


# ---- the schema -------------------------------------------------------------------------------


class _Ctx:
    def __init__(self, source: str):
        self.source = source
        self.pools: tuple[str, ...] = ()

    def fail(self, path: str, reason: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {path or '<top>'}: {reason}")


def _mapping(ctx: _Ctx, value: Any, path: str, allowed: Sequence[str], required: Sequence[str] = ()) -> dict:
    if not isinstance(value, dict):
        raise ctx.fail(path, f"expected a mapping, got {_tname(value)}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise ctx.fail(_join(path, str(unknown[0])), f"unknown key (allowed: {', '.join(allowed)})")
    for k in required:
        if k not in value:
            raise ctx.fail(_join(path, k), "required key is missing")
    return value


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _number(ctx: _Ctx, v: Any, path: str, *, minimum: float | None = 0.0, maximum: float | None = None,
            integer: bool = False, strict_min: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not float(v).is_integer()):
        raise ctx.fail(path, f"expected {'an integer' if integer else 'a number'}, got {_tname(v)} {v!r}")
    if math.isnan(v) or math.isinf(v):
        raise ctx.fail(path, "must be a finite number")
    if minimum is not None and (v < minimum or (strict_min and v == minimum)):
        raise ctx.fail(path, f"must be {'greater than' if strict_min else 'at least'} {minimum:g}, got {v!r}")
    if maximum is not None and v > maximum:
        raise ctx.fail(path, f"must be at most {maximum:g}, got {v!r}")
    return int(v) if integer else float(v)


def _duration(ctx: _Ctx, v: Any, path: str, *, positive: bool = False) -> float:
    try:
        s = parse_duration(v)
    except ValueError as e:
        raise ctx.fail(path, str(e)) from None
    if s < 0 or (positive and s == 0) or math.isnan(s) or math.isinf(s):
        raise ctx.fail(path, f"must be a {'positive' if positive else 'non-negative'} duration, got {v!r}")
    return s


def _string(ctx: _Ctx, v: Any, path: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ctx.fail(path, f"expected a non-empty string, got {_tname(v)}")
    return v


def _list(ctx: _Ctx, v: Any, path: str) -> list:
    if not isinstance(v, list):
        raise ctx.fail(path, f"expected a list, got {_tname(v)}")
    return v


def _window(ctx: _Ctx, v: Any, path: str, allowed: Sequence[str]) -> tuple[dict, float, float]:
    m = _mapping(ctx, v, path, allowed, required=("start", "end"))
    start = _duration(ctx, m["start"], _join(path, "start"))
    end = _duration(ctx, m["end"], _join(path, "end"))
    if end <= start:
        raise ctx.fail(_join(path, "end"), f"window ends ({m['end']!r}) before or when it starts ({m['start']!r})")
    return m, start, end


def _profile(ctx: _Ctx, v: Any, path: str, named: Mapping[str, tuple[float, ...]], length: int) -> tuple:
    if isinstance(v, str):
        if v not in named:
            raise ctx.fail(path, f"unknown profile {v!r} (known: {', '.join(named)})")
        return named[v]
    items = _list(ctx, v, path)
    if len(items) != length:
        raise ctx.fail(path, f"expected {length} multipliers, got {len(items)}")
    vals = tuple(_number(ctx, x, _join(path, i)) for i, x in enumerate(items))
    if max(vals) <= 0:
        raise ctx.fail(path, "at least one multiplier must be positive")
    return vals


def _shares(ctx: _Ctx, v: Any, path: str) -> tuple[tuple[str, float], ...]:
    m = _mapping(ctx, v, path, list(v) if isinstance(v, dict) else [])
    if not m:
        raise ctx.fail(path, "expected at least one location")
    out = tuple((str(k), _number(ctx, w, _join(path, str(k)))) for k, w in m.items())
    if sum(w for _, w in out) <= 0:
        raise ctx.fail(path, "shares must add up to more than 0")
    return out


_HEALTH_KEYS = {
    "window": ("window_s", "duration"), "max_error_rate": ("max_error_rate", "rate"),
    "min_calls": ("min_calls", "int"), "max_boot_failures": ("max_boot_failures", "int"),
    "slow_factor": ("slow_factor", "pos"), "backoff_initial": ("backoff_initial_s", "duration"),
    "backoff_max": ("backoff_max_s", "duration"), "backoff_growth": ("backoff_growth", "pos"),
}
_POLICY_KEYS = {
    "period": ("period_s", "pduration"), "busy_cpu_percent": ("busy_cpu_percent", "num"),
    "busy_io_bytes_per_s": ("busy_io_bytes_per_s", "num"), "maintenance_lead": ("maintenance_lead_s", "duration"),
    "boot_timeout": ("boot_timeout_s", "pduration"), "latency_weight": ("latency_weight", "num"),
    "remote_latency_ms": ("remote_latency_ms", "num"),
}
_POOL_KEYS = {
    "min_ready": ("min_ready", "int"), "max_total": ("max_total", "int"),
    "idle_timeout": ("idle_timeout_s", "pduration"), "grace": ("grace_s", "duration"),
    "max_age": ("max_age_s", "pduration"), "max_ready_age": ("max_ready_age_s", "pduration"),
}


def _typed(ctx: _Ctx, v: Any, path: str, kind: str) -> Any:
    if kind == "duration":
        return _duration(ctx, v, path)
    if kind == "pduration":
        return _duration(ctx, v, path, positive=True)
    if kind == "int":
        return _number(ctx, v, path, integer=True)
    if kind == "rate":
        return _number(ctx, v, path, maximum=1.0)
    if kind == "pos":
        return _number(ctx, v, path, strict_min=True)
    return _number(ctx, v, path)


def _fields(ctx: _Ctx, m: Mapping[str, Any], path: str, table: Mapping[str, tuple[str, str]]) -> dict:
    return {table[k][0]: _typed(ctx, v, _join(path, k), table[k][1]) for k, v in m.items() if k in table}


def _policy(ctx: _Ctx, raw: Any) -> PolicyConfig:
    m = _mapping(ctx, raw if raw is not None else {}, "policy", [*_POLICY_KEYS, "health", "latency_ms"])
    kw = _fields(ctx, m, "policy", _POLICY_KEYS)
    if "health" in m:
        h = _mapping(ctx, m["health"], "policy.health", list(_HEALTH_KEYS))
        kw["health"] = HealthConfig(**_fields(ctx, h, "policy.health", _HEALTH_KEYS))
    if "latency_ms" in m:
        rows = []
        for i, row in enumerate(_list(ctx, m["latency_ms"], "policy.latency_ms")):
            p = f"policy.latency_ms[{i}]"
            r = _mapping(ctx, row, p, ["location", "region", "ms"], required=["location", "region", "ms"])
            rows.append((_string(ctx, r["location"], p + ".location"), _string(ctx, r["region"], p + ".region"),
                         _number(ctx, r["ms"], p + ".ms")))
        kw["latency_ms"] = tuple(rows)
    return PolicyConfig(**kw)


_CLOUD_ALLOWED = ["name", "region", "priority", "cost_per_vm_hour", "quota", "expected_boot",
                  "boot_median", "boot_sigma", "boot_failure_rate", "api_error_rate", "outages", "maintenance"]


def _cloud(ctx: _Ctx, raw: Any, path: str) -> tuple[CloudConfig, SimCloudSpec]:
    m = _mapping(ctx, raw, path, _CLOUD_ALLOWED, required=["name"])
    name = _string(ctx, m["name"], path + ".name")
    boot = _duration(ctx, m.get("boot_median", 90), path + ".boot_median", positive=True)
    outages = []
    for i, o in enumerate(_list(ctx, m.get("outages", []), path + ".outages")):
        op = f"{path}.outages[{i}]"
        om, start, end = _window(ctx, o, op, ["start", "end", "mode", "factor", "error_rate"])
        mode = om.get("mode", DOWN)
        if mode not in (DOWN, SLOW, ERRORS):
            raise ctx.fail(op + ".mode", f"expected one of down, slow, errors, got {mode!r}")
        outages.append(Outage(start, end, mode, _number(ctx, om.get("factor", 5.0), op + ".factor", strict_min=True),
                              _number(ctx, om.get("error_rate", 1.0), op + ".error_rate", maximum=1.0)))
    windows = []
    for i, w in enumerate(_list(ctx, m.get("maintenance", []), path + ".maintenance")):
        _, start, end = _window(ctx, w, f"{path}.maintenance[{i}]", ["start", "end"])
        windows.append(MaintenanceWindow(start, end))
    quota = _number(ctx, m.get("quota", 100), path + ".quota", integer=True)
    cfg = CloudConfig(
        name=name, region=_string(ctx, m.get("region", "home"), path + ".region"),
        priority=_number(ctx, m.get("priority", 0), path + ".priority", integer=True, minimum=None),
        cost_per_vm_hour=_number(ctx, m.get("cost_per_vm_hour", 0.0), path + ".cost_per_vm_hour"),
        quota=quota, expected_boot_s=_duration(ctx, m.get("expected_boot", boot), path + ".expected_boot",
                                               positive=True),
        maintenance=tuple(sorted(windows, key=lambda w: w.start)))
    sim = SimCloudSpec(
        name=name, quota=quota, boot_median_s=boot,
        boot_sigma=_number(ctx, m.get("boot_sigma", 0.25), path + ".boot_sigma"),
        boot_failure_rate=_number(ctx, m.get("boot_failure_rate", 0.01), path + ".boot_failure_rate", maximum=1.0),
        api_error_rate=_number(ctx, m.get("api_error_rate", 0.0), path + ".api_error_rate", maximum=1.0),
        outages=tuple(sorted(outages, key=lambda o: o.start)))
    return cfg, sim


_DEMAND_ALLOWED = ["rate_per_hour", "daily", "weekly", "locations", "session", "abandon_rate",
                   "busy_abandon_rate", "busy", "surges"]


def _lognormal(ctx: _Ctx, raw: Any, path: str, median: float, sigma: float) -> tuple[float, float]:
    m = _mapping(ctx, raw, path, ["median", "sigma"])
    return (_duration(ctx, m.get("median", median), path + ".median", positive=True),
            _number(ctx, m.get("sigma", sigma), path + ".sigma"))


def _demand(ctx: _Ctx, raw: Any, path: str) -> DemandSpec:
    m = _mapping(ctx, raw, path, _DEMAND_ALLOWED, required=["rate_per_hour"])
    session = _lognormal(ctx, m.get("session", {}), path + ".session", 2 * 3600.0, 0.8)
    busy = _lognormal(ctx, m.get("busy", {}), path + ".busy", 6 * 3600.0, 0.5)
    surges = []
    for i, s in enumerate(_list(ctx, m.get("surges", []), path + ".surges")):
        sp = f"{path}.surges[{i}]"
        sm, start, end = _window(ctx, s, sp, ["start", "end", "factor"])
        if "factor" not in sm:
            raise ctx.fail(sp + ".factor", "required key is missing")
        surges.append(Surge(start, end, _number(ctx, sm["factor"], sp + ".factor")))
    return DemandSpec(
        rate_per_hour=_number(ctx, m["rate_per_hour"], path + ".rate_per_hour"),
        daily=_profile(ctx, m.get("daily", "office"), path + ".daily", DAILY_PROFILES, 24),
        weekly=_profile(ctx, m.get("weekly", "weekdays"), path + ".weekly", WEEKLY_PROFILES, 7),
        locations=_shares(ctx, m.get("locations", {"home": 1.0}), path + ".locations"),
        session_median_s=session[0], session_sigma=session[1],
        abandon_rate=_number(ctx, m.get("abandon_rate", 0.05), path + ".abandon_rate", maximum=1.0),
        busy_abandon_rate=_number(ctx, m.get("busy_abandon_rate", 0.3), path + ".busy_abandon_rate", maximum=1.0),
        busy_median_s=busy[0], busy_sigma=busy[1], surges=tuple(surges))


_POOL_ALLOWED = [*_POOL_KEYS, "name", "clouds", "demand"]


def _pool(ctx: _Ctx, raw: Any, path: str, clouds: set[str]) -> tuple[PoolConfig, DemandSpec]:
    m = _mapping(ctx, raw, path, _POOL_ALLOWED, required=["name", "demand"])
    name = _string(ctx, m["name"], path + ".name")
    kw = _fields(ctx, m, path, _POOL_KEYS)
    allowed = tuple(_string(ctx, c, f"{path}.clouds[{i}]") for i, c in enumerate(_list(ctx, m.get("clouds", []),
                                                                                        path + ".clouds")))
    for i, c in enumerate(allowed):
        if c not in clouds:
            raise ctx.fail(f"{path}.clouds[{i}]", f"no cloud named {c!r} in this scenario")
    demand = _demand(ctx, m["demand"], path + ".demand")
    pool = PoolConfig(name=name, clouds=allowed, user_locations=demand.locations, **kw)
    if pool.max_total < pool.min_ready:
        raise ctx.fail(path + ".max_total", f"must be at least min_ready ({pool.min_ready}), got {pool.max_total}")
    return pool, demand


# Sections other parts of daaas add to scenarios; each registers a validator here at import time of
# its own module (e.g. the trace replay and the facility calendar), so this schema stays the only one.
EXTRA_SECTIONS: dict[str, Callable[[_Ctx, Any, str], Any]] = {}
# The same for sections inside `policy:` (e.g. `policy.predictive`); results go to `extra["policy.<key>"]`.
POLICY_SECTIONS: dict[str, Callable[[_Ctx, Any, str], Any]] = {}
# Modules that register such sections, imported when a scenario is first validated (not at import
# time of this module, which they import themselves).
EXTENSIONS = ("twin.trace", "twin.calendar", "twin.predictive")


def _load_extensions() -> None:
    import importlib

    for name in EXTENSIONS:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


_TOP_ALLOWED = ["name", "description", "seed", "duration", "start_weekday", "agent_heartbeat", "policy",
                "clouds", "pools"]


def validate(raw: Any, *, source: str) -> Scenario:
    """Validate a parsed YAML document into a `Scenario`, or raise `ScenarioError`."""
    ctx = _Ctx(source)
    _load_extensions()
    m = _mapping(ctx, raw, "", [*_TOP_ALLOWED, *EXTRA_SECTIONS], required=["clouds", "pools"])
    policy_raw, policy_extra = m.get("policy"), {}
    if isinstance(policy_raw, dict):
        policy_extra = {f"policy.{k}": fn(ctx, policy_raw[k], f"policy.{k}") for k, fn in POLICY_SECTIONS.items()
                        if k in policy_raw}
        policy_raw = {k: v for k, v in policy_raw.items() if k not in POLICY_SECTIONS}
    clouds, sims = [], []
    for i, c in enumerate(_list(ctx, m["clouds"], "clouds")):
        cfg, sim = _cloud(ctx, c, f"clouds[{i}]")
        if any(x.name == cfg.name for x in clouds):
            raise ctx.fail(f"clouds[{i}].name", f"duplicate cloud name {cfg.name!r}")
        clouds.append(cfg)
        sims.append(sim)
    if not clouds:
        raise ctx.fail("clouds", "at least one cloud is needed")
    names = {c.name for c in clouds}
    pools, demand = [], {}
    for i, p in enumerate(_list(ctx, m["pools"], "pools")):
        pool, d = _pool(ctx, p, f"pools[{i}]", names)
        if pool.name in demand:
            raise ctx.fail(f"pools[{i}].name", f"duplicate pool name {pool.name!r}")
        pools.append(pool)
        demand[pool.name] = d
    if not pools:
        raise ctx.fail("pools", "at least one pool is needed")
    ctx.pools = tuple(demand)  # sections may refer to pools by name (trace mappings, calendar entries)
    extra = {k: fn(ctx, m[k], k) for k, fn in EXTRA_SECTIONS.items() if k in m} | policy_extra
    return Scenario(
        name=_string(ctx, m.get("name", Path(source).stem), "name"),
        source=source,
        seed=_number(ctx, m.get("seed", 1), "seed", integer=True),
        duration_s=_duration(ctx, m.get("duration", "7d"), "duration", positive=True),
        start_weekday=_number(ctx, m.get("start_weekday", 0), "start_weekday", integer=True, maximum=6),
        config=Config(pools=tuple(pools), clouds=tuple(clouds), policy=_policy(ctx, policy_raw)),
        clouds=tuple(sims), demand=demand,
        agent_heartbeat_s=_duration(ctx, m.get("agent_heartbeat", 900), "agent_heartbeat", positive=True),
        description=str(m.get("description", "")), extra=extra)


def apply_override(raw: Any, key: str, value: Any, *, source: str) -> None:
    """Set `key` (dotted path; list items of pools and clouds by name, `*` for all) to `value` in place."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ScenarioError(f"{source}: --set {key}: empty field path")
    nodes = [raw]
    for depth, part in enumerate(parts[:-1]):
        nxt = []
        for node in nodes:
            if isinstance(node, list):
                items = [x for x in node if isinstance(x, dict) and (part == "*" or x.get("name") == part)]
                if not items:
                    raise ScenarioError(f"{source}: --set {key}: no item named {part!r} in "
                                        f"{'.'.join(parts[:depth]) or '<top>'}")
                nxt += items
            elif isinstance(node, dict):
                nxt.append(node.setdefault(part, {}))
            else:
                raise ScenarioError(f"{source}: --set {key}: {'.'.join(parts[:depth])} is not a mapping or list")
        nodes = nxt
    for node in nodes:
        if not isinstance(node, dict):
            raise ScenarioError(f"{source}: --set {key}: cannot set a field inside a {type(node).__name__}")
        node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE read as YAML (numbers, durations as strings, lists)."""
    if "=" not in text:
        raise ScenarioError(f"--set {text!r}: expected KEY=VALUE")
    key, _, value = text.partition("=")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ScenarioError(f"--set {text!r}: value is not valid YAML ({e})") from None


def read_raw(path: str | Path) -> Any:
    """The parsed YAML of a scenario file, or a ScenarioError naming the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ScenarioError(f"{p}: no such scenario file") from None
    except OSError as e:
        raise ScenarioError(f"{p}: cannot read ({e.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        raise ScenarioError(f"{p}: {where}: not valid YAML ({getattr(e, 'problem', e)})") from None


def load_scenario(path: str | Path, *, overrides: Sequence[tuple[str, Any]] = (),
                  seed: int | None = None) -> Scenario:
    """Read, override, and validate a scenario file."""
    raw = copy.deepcopy(read_raw(path))
    for key, value in overrides:
        apply_override(raw, key, value, source=str(path))
    if seed is not None and isinstance(raw, dict):
        raw["seed"] = seed
    return validate(raw, source=str(path))
