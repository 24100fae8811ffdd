"""The live VMM's config file: pools, policy knobs, clouds file, store URL, log dir, owner id.

    owner_id: facility-prod          # tags every VM daaas creates; required once clouds are real
    store: sqlite:///var/lib/daaas/live.db   # or postgresql://user@host:port/db (several instances)
    log_dir: /var/log/daaas          # usage logs (JSON lines)
    clouds: clouds.yaml              # Live-A's clouds file; omitted: the embedded simulated clouds
    period_s: 10                     # seconds between passes
    pools:
      - {name: mantid, min_ready: 2, max_total: 20, idle_timeout_s: 7200, grace_s: 900}
    policy: {boot_timeout_s: 1800, busy_cpu_percent: 20}
    vmm: {request_timeout_s: 300, load_every_s: 60}
    portal: {host: 127.0.0.1, port: 8750}

Validated once here: an error names the file, the field path and the reason. Relative paths are
relative to the config file.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.config import HealthConfig, PolicyConfig, PoolConfig
from live.vmm import VmmOptions


class SettingsError(ValueError):
    """A bad config file: the message names the file, the field and the reason."""


@dataclass(frozen=True)
class Settings:
    owner_id: str
    store_url: str
    log_dir: Path
    pools: tuple[PoolConfig, ...]
    policy: PolicyConfig
    vmm: VmmOptions
    clouds_file: Path | None = None
    period_s: float = 10.0
    image_version: str = "1"
    portal_host: str = "127.0.0.1"
    portal_port: int = 8750
    source: str = "<defaults>"
    extra: dict[str, Any] = field(default_factory=dict)


def state_dir() -> Path:
    return Path(os.environ.get("DAAAS_STATE_DIR") or Path.home() / ".local" / "share" / "daaas")


DEFAULT_POOLS = (PoolConfig(name="mantid", min_ready=2, max_total=12, idle_timeout_s=60.0, grace_s=20.0,
                            max_age_s=3600.0, max_ready_age_s=600.0),
                 PoolConfig(name="gpu", min_ready=1, max_total=4, idle_timeout_s=60.0, grace_s=20.0,
                            max_age_s=3600.0, max_ready_age_s=600.0))


def embedded_settings() -> Settings:
    """No config file: the embedded default (simulated clouds, a fresh store, short timeouts to watch)."""
    d = state_dir() / "embedded"
    return Settings(owner_id="daaas-embedded", store_url=f"sqlite:///{d / 'live.db'}", log_dir=d / "logs",
                    pools=DEFAULT_POOLS, policy=PolicyConfig(period_s=2.0, boot_timeout_s=120.0),
                    vmm=VmmOptions(request_timeout_s=60.0, terminate_retry_s=10.0, load_every_s=10.0),
                    period_s=2.0)


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _kind(f: dataclasses.Field) -> str:
    """A field's annotation as text. Usually the text itself (from __future__ import annotations); core's
    classes compiled with mypyc hold the runtime class instead, whose arguments are gone: a bare `tuple`
    there is `clouds: tuple[str, ...]`, the one tuple field settable here."""
    if isinstance(f.type, str):
        return f.type
    name = getattr(f.type, "__name__", str(f.type))
    return "tuple[str, ...]" if name == "tuple" else name


def _number(where: str, v: Any, *, positive: bool = False, integer: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
        raise SettingsError(f"{where}: expected {'an integer' if integer else 'a number'}, got {v!r}")
    if v < 0 or (positive and v == 0):
        raise SettingsError(f"{where}: must be {'positive' if positive else 'zero or more'}, got {v!r}")
    return v


def _build(cls, data: Any, where: str, *, skip: frozenset[str] = frozenset()) -> Any:
    """A frozen dataclass from a mapping whose keys are its numeric (or string) fields."""
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {k: f for k, f in _fields(cls).items() if k not in skip}
    unknown = set(data) - set(fields)
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(fields)}")
    kw = {}
    for k, v in data.items():
        kind = _kind(fields[k])
        if kind == "str":
            if not isinstance(v, str) or not v:
                raise SettingsError(f"{where}.{k}: expected a non-empty string, got {v!r}")
            kw[k] = v
        elif kind.startswith("tuple[str"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise SettingsError(f"{where}.{k}: expected a list of names, got {v!r}")
            kw[k] = tuple(v)
        elif kind in ("int", "float"):
            kw[k] = _number(f"{where}.{k}", v, integer=kind == "int")
        else:
            raise SettingsError(f"{where}.{k}: not settable here")
    return cls(**kw)


def load_settings(path: str | Path) -> Settings:
    """Read and validate a config file; raise `SettingsError` naming the file and field."""
    path = Path(path)
    src = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SettingsError(f"{src}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SettingsError(f"{src}: not YAML ({e})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{src}: expected a mapping at the top")
    known = {"owner_id", "store", "log_dir", "clouds", "period_s", "image_version", "pools", "policy", "vmm",
             "portal"}
    unknown = set(data) - known
    if unknown:
        raise SettingsError(f"{src}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    base = path.parent

    def s(key: str, default: str | None) -> str | None:
        v = data.get(key, default)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise SettingsError(f"{src}: {key}: expected a non-empty string, got {v!r}")
        return v

    owner = s("owner_id", None)
    clouds = s("clouds", None)
    if clouds is not None and owner is None:
        raise SettingsError(f"{src}: owner_id: required when clouds are configured (it tags every VM)")
    store = s("store", f"sqlite:///{state_dir() / 'live.db'}")
    if not (store.startswith("sqlite:///") or store.startswith("postgresql")):
        raise SettingsError(f"{src}: store: expected sqlite:///PATH or postgresql://..., got {store!r}")
    if store.startswith("sqlite:///") and not store.startswith("sqlite:////") and store != "sqlite:///:memory:":
        store = f"sqlite:///{(base / store[len('sqlite:///'):]).resolve()}"
    log_dir = Path(s("log_dir", str(state_dir() / "logs")))
    pools_data = data.get("pools")
    if pools_data is None:
        pools = DEFAULT_POOLS
    else:
        if not isinstance(pools_data, list) or not pools_data:
            raise SettingsError(f"{src}: pools: expected a non-empty list")
        pools = []
        for i, p in enumerate(pools_data):
            where = f"{src}: pools[{i}]"
            if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
                raise SettingsError(f"{where}.name: required, a non-empty string")
            pools.append(_build(PoolConfig, p, where, skip=frozenset({"user_locations"})))
        names = [p.name for p in pools]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SettingsError(f"{src}: pools: duplicate name(s) {sorted(dup)}")
        pools = tuple(pools)
    pol = data.get("policy") or {}
    health = _build(HealthConfig, pol.pop("health", {}) if isinstance(pol, dict) else {}, f"{src}: policy.health")
    policy = dataclasses.replace(
        _build(PolicyConfig, pol, f"{src}: policy", skip=frozenset({"health", "latency_ms"})), health=health)
    vmm = _build(VmmOptions, data.get("vmm") or {}, f"{src}: vmm")
    portal = data.get("portal") or {}
    if not isinstance(portal, dict) or set(portal) - {"host", "port"}:
        raise SettingsError(f"{src}: portal: expected a mapping with host and port")
    port = portal.get("port", 8750)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536:
        raise SettingsError(f"{src}: portal.port: expected a port number, got {port!r}")
    period = _number(f"{src}: period_s", data.get("period_s", 10.0), positive=True)
    return Settings(owner_id=owner or "daaas-embedded", store_url=store,
                    log_dir=log_dir if log_dir.is_absolute() else base / log_dir, pools=pools, policy=policy,
                    vmm=vmm, clouds_file=None if clouds is None else (base / clouds), period_s=float(period),
                    image_version=s("image_version", "1"), portal_host=str(portal.get("host", "127.0.0.1")),
                    portal_port=port, source=src)
