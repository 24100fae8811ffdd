"""The one event schema shared by the twin's `events.jsonl` and the live VMM's usage logs.

One event a line: `{"t": ..., "kind": ..., "pool": ..., "cloud": ..., "vm": ..., "user": ...,
"details": {...}}`. `t` is seconds: simulated seconds from the scenario start in the twin, Unix
seconds live. Reports compute every metric from these events alone, so one report reads both.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

# The kinds, and what `details` carries for each.
REQUEST = "request"  # a user asks for a VM: {location}
ASSIGN = "assign"  # a ready VM is given to a user: {wait_s, request}
RELEASE = "release"  # the user gives the VM back
ABANDON = "abandon"  # twin ground truth: the user walked away without releasing: {busy}
LAUNCH = "launch"  # a VM is asked of a cloud: {reason, probe, cost_per_hour, region}
LAUNCH_FAILED = "launch_failed"  # the cloud refused: {error, quota}
READY = "ready"  # a VM finished booting: {boot_s}
BOOT_FAILED = "boot_failed"  # a VM failed to boot or timed out: {reason}
WARN = "warn"  # the owner was warned: {reason, reclaim_at}
DRAIN = "drain"  # the owner was told of maintenance: {at}
TERMINATE = "terminate"  # a VM is deleted: {reason, state}
GONE = "gone"  # a VM vanished from its cloud (outage, or found missing on reconcile)
API_ERROR = "api_error"  # a cloud call failed: {call, error}
CLOUD_STATUS = "cloud_status"  # the policy changed its view of a cloud: {status, verdict, backoff_s}
CLOUD_DOWN = "cloud_down"  # twin: an outage or slow period began: {mode}
CLOUD_UP = "cloud_up"  # twin: it ended
MAINTENANCE_START = "maintenance_start"  # a cloud's planned window began: {end}
MAINTENANCE_END = "maintenance_end"
RUN = "run"  # first event of a log: {scenario, seed, start, end, clouds: {name: {cost_per_hour, region}},
#              pools: [...], time_base: "sim" | "unix"}
LOAD = "load"  # periodic sample: {ready, booting, allocated, abandoned} for a pool on a cloud
POLICY = "policy"  # a policy note (e.g. forecast fallback): {message, ...}
# The DMS's data transfers (user: the subject of the certificate that asked).
TRANSFER_SUBMIT = "transfer_submit"  # {transfer, source, destination, adapter, streams, files, bytes}
TRANSFER_FILE_DONE = "transfer_file_done"  # {transfer, path, bytes, seconds}
TRANSFER_FILE_FAILED = "transfer_file_failed"  # {transfer, path, error}
TRANSFER_DONE = "transfer_done"  # {transfer, files_done, files_total, bytes_done, seconds, error: null}
TRANSFER_FAILED = "transfer_failed"  # the same, with the error
TRANSFER_CANCELLED = "transfer_cancelled"  # the same
TRANSFER_INTERRUPTED = "transfer_interrupted"  # the API stopped while it ran: {transfer}

TRANSFER_KINDS = frozenset({TRANSFER_SUBMIT, TRANSFER_FILE_DONE, TRANSFER_FILE_FAILED, TRANSFER_DONE,
                            TRANSFER_FAILED, TRANSFER_CANCELLED, TRANSFER_INTERRUPTED})
KINDS = frozenset({
    REQUEST, ASSIGN, RELEASE, ABANDON, LAUNCH, LAUNCH_FAILED, READY, BOOT_FAILED, WARN, DRAIN,
    TERMINATE, GONE, API_ERROR, CLOUD_STATUS, CLOUD_DOWN, CLOUD_UP, MAINTENANCE_START,
    MAINTENANCE_END, LOAD, POLICY, RUN, *TRANSFER_KINDS,
})


@dataclass(frozen=True)
class Event:
    """One thing that happened, in the shared schema."""

    # `| int`: kept as given (the twin's clock starts at int 0). Compiled with mypyc, a plain `float`
    # field would store 0.0, and the log would read "t":0.0 where the interpreted core writes "t":0.
    t: float | int
    kind: str
    pool: str | None = None
    cloud: str | None = None
    vm: str | None = None
    user: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "kind": self.kind, "pool": self.pool, "cloud": self.cloud,
                "vm": self.vm, "user": self.user, "details": self.details}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=False)


class EventFormatError(ValueError):
    """A line of an event log is not an event; the message names the line."""


def event_from_dict(d: Any, *, where: str = "event") -> Event:
    """Build an `Event` from its JSON form, or raise `EventFormatError` naming `where` and why."""
    if not isinstance(d, dict):
        raise EventFormatError(f"{where}: expected a JSON object, got {type(d).__name__}")
    unknown = set(d) - {"t", "kind", "pool", "cloud", "vm", "user", "details"}
    if unknown:
        raise EventFormatError(f"{where}: unknown field(s) {sorted(unknown)}")
    t = d.get("t")
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        raise EventFormatError(f"{where}: field 't' must be a number of seconds")
    kind = d.get("kind")
    if kind not in KINDS:
        raise EventFormatError(f"{where}: field 'kind' is {kind!r}, not one of the known kinds")
    for key in ("pool", "cloud", "vm", "user"):
        v = d.get(key)
        if v is not None and not isinstance(v, str):
            raise EventFormatError(f"{where}: field {key!r} must be a string or null")
    details = d.get("details")
    if details is None:
        details = {}
    if not isinstance(details, dict):
        raise EventFormatError(f"{where}: field 'details' must be an object")
    return Event(t=float(t), kind=kind, pool=d.get("pool"), cloud=d.get("cloud"), vm=d.get("vm"),
                 user=d.get("user"), details=details)


def parse_lines(lines: Any, *, source: str) -> list[Event]:
    """Parse JSON lines into events; a bad line raises `EventFormatError` with `source:line`."""
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise EventFormatError(f"{source}:{n}: not JSON ({e.msg})") from None
        out.append(event_from_dict(d, where=f"{source}:{n}"))
    return out
