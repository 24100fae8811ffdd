"""The clouds file: every cloud daaas may use, in ONE YAML file, validated here at the edge.

    clouds:
      - name: home                     # unique; the policy and the logs use it
        provider: openstack            # a key of live.clouds.registry.PROVIDERS: ec2, openstack, azure, gce
        region: RegionOne              # the policy's region (latency to users), and the provider's region
        priority: 0                    # lower is preferred
        cost_per_vm_hour: 0.0
        quota: 40                      # the most VMs daaas runs there at once
        expected_boot_s: 120
        image: 0f1e...                 # provider image id
        size: m1.large                 # provider size (flavor, instance type) id
        endpoint: https://keystone.example.org:5000/v3   # EC2: optional (an EC2-compatible server)
        timeout_s: 10                  # a call not answered within this fails (the cloud is down this pass)
        credentials: {env: {username: OS_USERNAME, password: OS_PASSWORD}}   # or {file: home-creds.yaml}
        options: {tenant: facility, service_region: RegionOne}              # provider-specific, see registry
        maintenance: [{start: "2026-12-01T08:00:00Z", end: "2026-12-01T12:00:00Z"}]

Credentials come from environment variables (`env`: credential field -> variable name) or from a
YAML file of `field: value` (`file`, relative to the clouds file, readable by its owner only). They
are held as `Secret`s, whose repr is '***', and scrubbed from cloud error messages: they never reach a
log. Every error names the file and the field path (`clouds[1].credentials.env.password: ...`).

`load_clouds(path, *, owner_id)` returns one `CloudBinding(config, adapter)` per cloud: the
`core.config.CloudConfig` the policy reads and the `Cloud` adapter the VMM calls. Building an adapter
makes no network call.
"""
from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from core.config import CloudConfig, MaintenanceWindow
from core.ports import Cloud
from live.clouds.base import DEFAULT_TIMEOUT_S, CloudSpec, Secret
from live.clouds.registry import PROVIDERS

CLOUD_KEYS = {"name", "provider", "region", "priority", "cost_per_vm_hour", "quota", "expected_boot_s", "image",
              "size", "endpoint", "credentials", "options", "maintenance", "timeout_s"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class CloudsConfigError(ValueError):
    """The clouds file is wrong; the message names the file, the field path and the reason."""


@dataclass(frozen=True)
class CloudBinding:
    """One configured cloud: what the policy knows of it and the adapter that reaches it."""

    config: CloudConfig
    adapter: Cloud


# on_call(cloud, call, ok, seconds): every adapter call, for callers that record cloud health themselves.
CloudCallHook = Callable[[str, str, bool, float], None]


def load_clouds(path: str | os.PathLike, *, owner_id: str, environ: Mapping[str, str] | None = None,
                on_call: CloudCallHook | None = None) -> list[CloudBinding]:
    """Read and validate the clouds file at `path`; build each cloud's CloudConfig and adapter."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise CloudsConfigError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CloudsConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    return parse_clouds(data, source=str(path), base_dir=path.parent, owner_id=owner_id,
                        environ=os.environ if environ is None else environ, on_call=on_call)


def parse_clouds(data: Any, *, source: str, base_dir: Path, owner_id: str, environ: Mapping[str, str],
                 on_call: CloudCallHook | None = None) -> list[CloudBinding]:
    """Validate already-parsed YAML (`source` names it in errors) and build the bindings."""
    def fail(where: str, why: str):
        raise CloudsConfigError(f"{source}: {where}: {why}")

    if not isinstance(owner_id, str) or not owner_id:
        fail("owner_id", "required (it tags every VM daaas creates)")
    if not isinstance(data, dict):
        fail("(top)", f"must be a mapping with a `clouds` list, not {_kind(data)}")
    extra = set(data) - {"clouds"}
    if extra:
        fail(sorted(extra)[0], "unknown key (the file holds only `clouds`)")
    clouds = data.get("clouds")
    if not isinstance(clouds, list) or not clouds:
        fail("clouds", "must be a non-empty list of clouds")
    out: list[CloudBinding] = []
    seen: set[str] = set()
    for i, raw in enumerate(clouds):
        binding = _cloud(raw, f"clouds[{i}]", fail, base_dir=base_dir, owner_id=owner_id, environ=environ,
                         on_call=on_call)
        if binding.config.name in seen:
            fail(f"clouds[{i}].name", f"{binding.config.name!r} is used by an earlier cloud")
        seen.add(binding.config.name)
        out.append(binding)
    return out


def _cloud(raw: Any, at: str, fail, *, base_dir: Path, owner_id: str, environ: Mapping[str, str],
           on_call: CloudCallHook | None) -> CloudBinding:
    if not isinstance(raw, dict):
        fail(at, f"must be a mapping, not {_kind(raw)}")
    for k in raw:
        if k not in CLOUD_KEYS:
            fail(f"{at}.{k}", f"unknown key (known: {', '.join(sorted(CLOUD_KEYS))})")

    def req(key: str) -> Any:
        if raw.get(key) is None:
            fail(f"{at}.{key}", "required")
        return raw[key]

    name = req("name")
    if not isinstance(name, str) or not _NAME.match(name):
        fail(f"{at}.name", "must be a name of letters, digits, '_', '.' or '-' (63 at most)")
    provider = req("provider")
    if provider not in PROVIDERS:
        fail(f"{at}.provider", f"unknown provider {provider!r} (known: {', '.join(sorted(PROVIDERS))})")
    entry = PROVIDERS[provider]
    region = _string(req("region"), f"{at}.region", fail)
    image = _string(req("image"), f"{at}.image", fail)
    size = _string(req("size"), f"{at}.size", fail)
    priority = _number(raw.get("priority", 0), f"{at}.priority", fail, integer=True)
    cost = _number(raw.get("cost_per_vm_hour", 0.0), f"{at}.cost_per_vm_hour", fail, minimum=0.0)
    quota = _number(raw.get("quota", 100), f"{at}.quota", fail, integer=True, minimum=0)
    boot = _number(raw.get("expected_boot_s", 120.0), f"{at}.expected_boot_s", fail, minimum=0.0, positive=True)
    timeout = _number(raw.get("timeout_s", DEFAULT_TIMEOUT_S), f"{at}.timeout_s", fail, minimum=0.0, positive=True)
    endpoint = raw.get("endpoint")
    if endpoint is None:
        if entry.endpoint_required:
            fail(f"{at}.endpoint", f"required for provider {provider!r}")
    elif not isinstance(endpoint, str) or not re.match(r"^https?://[^/\s:]+(:\d{1,5})?(/\S*)?$", endpoint):
        fail(f"{at}.endpoint", "must be an http:// or https:// URL")
    options = raw.get("options", {})
    if not isinstance(options, dict):
        fail(f"{at}.options", f"must be a mapping, not {_kind(options)}")
    for k in options:
        if k not in entry.options:
            fail(f"{at}.options.{k}", f"unknown option for provider {provider!r} "
                                      f"(known: {', '.join(entry.options) or 'none'})")
    for k in entry.required_options:
        if options.get(k) in (None, ""):
            fail(f"{at}.options.{k}", f"required for provider {provider!r}")
    credentials = _credentials(raw.get("credentials"), f"{at}.credentials", fail, entry=entry, base_dir=base_dir,
                               environ=environ)
    windows = _maintenance(raw.get("maintenance", []), f"{at}.maintenance", fail)
    spec = CloudSpec(name=name, provider=provider, region=region, image=image, size=size, endpoint=endpoint,
                     credentials=credentials, options=dict(options), timeout_s=float(timeout))
    hook = None if on_call is None else (lambda call, ok, s, _n=name: on_call(_n, call, ok, s))
    try:
        adapter = entry.build(spec, owner_id=owner_id, on_call=hook)
    except (ValueError, KeyError, TypeError) as e:  # e.g. libcloud's "Invalid region"
        fail(at, f"provider {provider!r} refused this cloud: {e}")
    config = CloudConfig(name=name, region=region, priority=int(priority), cost_per_vm_hour=float(cost),
                         quota=int(quota), expected_boot_s=float(boot), maintenance=windows)
    return CloudBinding(config=config, adapter=adapter)


def _credentials(raw: Any, at: str, fail, *, entry, base_dir: Path, environ: Mapping[str, str]) -> dict[str, Secret]:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("env", "file"):
        fail(at, "must be {env: {field: VARIABLE, ...}} or {file: path}")
    known = entry.credentials + entry.optional_credentials
    values: dict[str, str] = {}
    if "env" in raw:
        names = raw["env"]
        if not isinstance(names, dict):
            fail(f"{at}.env", f"must map credential fields to environment variable names, not {_kind(names)}")
        for field, var in names.items():
            if field not in known:
                fail(f"{at}.env.{field}", f"unknown credential field (known: {', '.join(known)})")
            if not isinstance(var, str) or not var:
                fail(f"{at}.env.{field}", "must be an environment variable name")
            if not environ.get(var):
                fail(f"{at}.env.{field}", f"environment variable {var} is not set")
            values[field] = environ[var]
    else:
        where = raw["file"]
        if not isinstance(where, str) or not where:
            fail(f"{at}.file", "must be a path")
        p = Path(where) if Path(where).is_absolute() else base_dir / where
        try:
            mode = p.stat().st_mode
            text = p.read_text()
        except OSError as e:
            fail(f"{at}.file", f"cannot read {p}: {e.strerror or e}")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            fail(f"{at}.file", f"{p} is readable by others than its owner (chmod 600 it)")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            fail(f"{at}.file", f"{p} is not valid YAML")  # no detail: it would quote the secrets
        if not isinstance(data, dict):
            fail(f"{at}.file", f"{p} must be a mapping of credential fields to values")
        for field, value in data.items():
            if field not in known:
                fail(f"{at}.file", f"{p}: unknown credential field {field!r} (known: {', '.join(known)})")
            if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
                fail(f"{at}.file", f"{p}: {field}: must be a non-empty string")
            values[field] = str(value)
    for field in entry.credentials:
        if field not in values:
            fail(at, f"missing credential field {field!r}")
    return {k: Secret(v) for k, v in values.items()}


def _maintenance(raw: Any, at: str, fail) -> tuple[MaintenanceWindow, ...]:
    if not isinstance(raw, list):
        fail(at, f"must be a list of {{start, end}}, not {_kind(raw)}")
    out = []
    for i, w in enumerate(raw):
        if not isinstance(w, dict) or set(w) != {"start", "end"}:
            fail(f"{at}[{i}]", "must be {start: ISO time, end: ISO time}")
        start, end = _time(w["start"], f"{at}[{i}].start", fail), _time(w["end"], f"{at}[{i}].end", fail)
        if end <= start:
            fail(f"{at}[{i}].end", "must be after start")
        out.append(MaintenanceWindow(start=start, end=end))
    return tuple(out)


def _time(v: Any, at: str, fail) -> float:
    if isinstance(v, datetime):  # YAML reads unquoted timestamps itself
        t = v
    elif isinstance(v, str):
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            fail(at, f"{v!r} is not an ISO 8601 time")
    else:
        fail(at, f"must be an ISO 8601 time, not {_kind(v)}")
    if t.tzinfo is None:
        fail(at, "needs a time zone (e.g. 2026-12-01T08:00:00Z): the VMM runs on Unix time")
    return t.timestamp()


def _string(v: Any, at: str, fail) -> str:
    if not isinstance(v, str) or not v.strip():
        fail(at, f"must be a non-empty string, not {_kind(v)}")
    return v


def _number(v: Any, at: str, fail, *, integer: bool = False, minimum: float | None = None,
            positive: bool = False) -> float:
    ok = isinstance(v, int) if integer else isinstance(v, int | float)
    if isinstance(v, bool) or not ok or (isinstance(v, float) and not math.isfinite(v)):
        fail(at, f"must be {'an integer' if integer else 'a number'}, not {_kind(v)}")
    if minimum is not None and v < minimum:
        fail(at, f"must be at least {minimum:g}")
    if positive and v <= 0:
        fail(at, "must be more than 0")
    return v


def _kind(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "empty"}.get(
        type(v), type(v).__name__)
