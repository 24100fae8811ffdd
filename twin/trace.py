"""Trace replay: a scenario's demand taken from a real log instead of the generator.

The scenario's `trace:` section names the file and how to map it:

    trace:
      path: ../shared/traces/LCG.swf.gz   # relative to the scenario file; gzip or plain
      format: swf                          # swf (Standard Workload Format) or csv; default from the name
      start: 0                             # trace seconds (from its first job) where the replay begins
      time_scale: 1.0                      # trace seconds x this = twin seconds (0.5: twice as fast)
      time_shift: 0                        # twin seconds added after scaling
      rate_scale: 0.03                     # < 1 thins arrivals, > 1 replicates them (seeded)
      session_scale: 1.0                   # run times x this = session lengths
      min_session: 60                      # session lengths are clipped to [min_session, max_session]
      max_session: 3d
      pools:                               # which pool each job goes to
        by: user                           # swf: user, group, queue, partition, executable; csv: a column
        map: {"1": mantid}                 # value -> pool (exact values first)
        spread: [mantid, mantid, gpu]      # then the rest spread over these by a stable hash
        default: mantid                    # or this; a job no rule places is dropped
      locations: {by: partition, map: {...}, spread: [...], default: home}
      csv:                                 # only for csv: which columns hold what
        columns: {arrival: submit, duration: runtime, pool: queue, user: user, location: site}
        delimiter: ","
        time: seconds                      # seconds (numbers) or iso (ISO 8601 timestamps)

The pools the trace places jobs in take their arrivals from it (their `demand.rate_per_hour` is
ignored); each session's abandonment still follows the pool's `demand` section. A line that cannot be
read fails with the file, the line number and the reason.
"""
from __future__ import annotations

import csv
import functools
import gzip
import io
import math
import random
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from twin.demand import Arrival
from twin.scenario import EXTRA_SECTIONS, Scenario, ScenarioError, _Ctx, _duration, _join, _list, _mapping, _number

SWF_FIELDS = ("job", "submit", "wait", "run", "procs", "cpu", "memory", "req_procs", "req_time", "req_memory",
              "status", "user", "group", "executable", "queue", "partition", "preceding", "think")
SWF_KEYS = ("user", "group", "executable", "queue", "partition")
CSV_ROLES = ("arrival", "duration", "pool", "user", "location")


class TraceError(ScenarioError):
    """A trace that cannot be replayed: names the file, the line and the reason."""


@dataclass(frozen=True)
class Mapping_:
    """Which pool (or location) a job goes to, from one of its fields."""

    by: str
    map: tuple[tuple[str, str], ...] = ()
    spread: tuple[str, ...] = ()
    default: str | None = None

    def place(self, value: str) -> str | None:
        for k, v in self.map:
            if k == value:
                return v
        if self.spread:
            return self.spread[zlib.crc32(value.encode()) % len(self.spread)]
        return self.default


@dataclass(frozen=True)
class CsvSpec:
    columns: tuple[tuple[str, str], ...]  # (role, column name)
    delimiter: str = ","
    time: str = "seconds"

    def column(self, role: str) -> str | None:
        return dict(self.columns).get(role)


@dataclass(frozen=True)
class TraceSpec:
    """A validated `trace:` section."""

    path: str  # resolved
    format: str
    pools: Mapping_
    locations: Mapping_ | None = None
    start: float = 0.0
    time_scale: float = 1.0
    time_shift: float = 0.0
    rate_scale: float = 1.0
    session_scale: float = 1.0
    min_session: float = 60.0
    max_session: float = 3 * 86400.0
    csv: CsvSpec | None = None
    source: str = ""  # the scenario file, for messages
    stats: tuple[tuple[str, Any], ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Job:
    """One trace record reduced to what a replay needs (times relative to the trace's first job)."""

    t: float
    duration: float
    keys: tuple[tuple[str, str], ...]  # field -> value, for the pool and location mappings


# ---- reading -----------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def read_swf(path: str | Path) -> list[Job]:
    """Every job of an SWF file (header lines start with ';'), in submit order.

    Jobs whose submit or run time is unknown (-1) cannot be replayed and are skipped; a line that is
    not 18 numbers raises `TraceError` naming the file and line.
    """
    path = Path(path)
    jobs = []
    try:
        with _open_text(path) as f:
            for n, line in enumerate(f, 1):
                s = line.strip()
                if not s or s.startswith(";"):
                    continue
                parts = s.split()
                if len(parts) != len(SWF_FIELDS):
                    raise TraceError(f"{path}:{n}: expected {len(SWF_FIELDS)} fields, got {len(parts)}")
                try:
                    vals = [float(p) for p in parts]
                except ValueError:
                    bad = next(p for p in parts if not _is_float(p))
                    raise TraceError(f"{path}:{n}: field {SWF_FIELDS[parts.index(bad)]!r} is not a number: "
                                     f"{bad!r}") from None
                submit, run = vals[1], vals[3]
                if submit < 0 or run < 0:
                    continue
                keys = tuple((k, str(int(vals[SWF_FIELDS.index(k)]))) for k in SWF_KEYS)
                jobs.append(Job(submit, run, keys))
    except OSError as e:
        raise TraceError(f"{path}: cannot read the trace ({e.strerror or e})") from None
    except (EOFError, gzip.BadGzipFile) as e:
        raise TraceError(f"{path}: corrupt gzip file ({e})") from None
    return _relative(jobs)


def read_csv(path: str | Path, spec: CsvSpec) -> list[Job]:
    """Every row of a CSV trace with a header line, its columns mapped by `spec`."""
    path = Path(path)
    arrival, duration = spec.column("arrival"), spec.column("duration")
    jobs = []
    try:
        with _open_text(path) as f:
            reader = csv.reader(f, delimiter=spec.delimiter)
            header = next(reader, None)
            if header is None:
                raise TraceError(f"{path}:1: empty file, expected a header line")
            header = [h.strip() for h in header]
            for role, col in spec.columns:
                if col not in header:
                    raise TraceError(f"{path}:1: no column {col!r} (for {role}) in the header {header}")
            idx = {col: header.index(col) for _, col in spec.columns}
            for row in reader:
                n = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise TraceError(f"{path}:{n}: expected {len(header)} columns, got {len(row)}")
                t = _csv_time(row[idx[arrival]].strip(), spec.time, path, n, arrival)
                try:
                    d = float(row[idx[duration]])
                except ValueError:
                    raise TraceError(f"{path}:{n}: column {duration!r} is not a number of seconds: "
                                     f"{row[idx[duration]]!r}") from None
                if d < 0 or not math.isfinite(d):
                    raise TraceError(f"{path}:{n}: column {duration!r} must be a non-negative duration, got {d!r}")
                keys = tuple((col, row[i].strip()) for col, i in idx.items())
                jobs.append(Job(t, d, keys))
    except OSError as e:
        raise TraceError(f"{path}: cannot read the trace ({e.strerror or e})") from None
    return _relative(jobs)


def _csv_time(text: str, kind: str, path: Path, n: int, col: str) -> float:
    if kind == "iso":
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            raise TraceError(f"{path}:{n}: column {col!r} is not an ISO 8601 time: {text!r}") from None
    try:
        v = float(text)
    except ValueError:
        raise TraceError(f"{path}:{n}: column {col!r} is not a number of seconds: {text!r}") from None
    if not math.isfinite(v):
        raise TraceError(f"{path}:{n}: column {col!r} must be finite, got {text!r}")
    return v


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _relative(jobs: list[Job]) -> list[Job]:
    jobs.sort(key=lambda j: j.t)
    if not jobs:
        return jobs
    t0 = jobs[0].t
    return [Job(j.t - t0, j.duration, j.keys) for j in jobs]


@functools.lru_cache(maxsize=4)
def _cached_jobs(path: str, mtime: float, size: int, fmt: str, csv_spec: CsvSpec | None) -> tuple[Job, ...]:
    # Validation and the replay (and each run of a sweep in one worker) read the same file: once.
    return tuple(read_swf(path) if fmt == "swf" else read_csv(path, csv_spec))


def load_jobs(spec: TraceSpec) -> tuple[Job, ...]:
    """The trace's jobs (cached per file version)."""
    p = Path(spec.path)
    try:
        st = p.stat()
    except OSError as e:
        raise TraceError(f"{spec.source}: trace.path: cannot read {p} ({e.strerror})") from None
    return _cached_jobs(str(p), st.st_mtime, st.st_size, spec.format, spec.csv)


# ---- replay ------------------------------------------------------------------------------------


def trace_arrivals(scenario: Scenario) -> dict[str, list[Arrival]]:
    """Each pool's arrivals from the scenario's trace (pools the trace places no job in: none)."""
    spec: TraceSpec = scenario.extra["trace"]
    pools = {p.name for p in scenario.config.pools}
    for name in (*(v for _, v in spec.pools.map), *spec.pools.spread, spec.pools.default):
        if name is not None and name not in pools:
            raise ScenarioError(f"{spec.source}: trace.pools: no pool named {name!r} in this scenario")
    rng = random.Random(f"trace:{scenario.seed}")
    out: dict[str, list[Arrival]] = {}
    duration = scenario.duration_s
    users: dict[str, int] = {}
    for job in load_jobs(spec):
        if job.t < spec.start:
            continue
        t = (job.t - spec.start) * spec.time_scale + spec.time_shift
        if t >= duration:
            break
        keys = dict(job.keys)
        copies = _copies(spec.rate_scale, rng)
        if not copies or t < 0:
            continue
        pool = spec.pools.place(keys.get(spec.pools.by, ""))
        if pool is None:
            continue
        loc = (spec.locations.place(keys.get(spec.locations.by, "")) if spec.locations else None) or "home"
        user = keys.get("user", "")
        session = min(spec.max_session, max(spec.min_session, job.duration * spec.session_scale))
        demand = scenario.demand[pool]
        for i in range(copies):
            # Replicas (rate_scale > 1) come a little apart, as other users doing the same thing.
            at = t + (rng.uniform(0, 60.0) if i else 0.0)
            abandons = rng.random() < demand.abandon_rate
            busy = rng.lognormvariate(0.0, demand.busy_sigma) * demand.busy_median_s
            busy_left = abandons and rng.random() < demand.busy_abandon_rate
            uid = users.setdefault(f"{user}/{i}", len(users))
            out.setdefault(pool, []).append(Arrival(at, pool, f"{pool}-t{uid}", loc, session, abandons,
                                                    busy if busy_left else 0.0))
    for arr in out.values():
        arr.sort(key=lambda a: a.t)
    return out


def _copies(scale: float, rng: random.Random) -> int:
    whole = int(scale)
    return whole + (rng.random() < scale - whole)


def iter_hourly_counts(arrivals: Mapping[str, list[Arrival]], duration_s: float) -> Iterator[tuple[str, list[int]]]:
    """Arrivals per hour of each pool (for checking a replay's rate against its target)."""
    hours = int(math.ceil(duration_s / 3600))
    for pool, arr in arrivals.items():
        counts = [0] * hours
        for a in arr:
            counts[min(hours - 1, int(a.t // 3600))] += 1
        yield pool, counts


# ---- the scenario section ----------------------------------------------------------------------

_ALLOWED = ["path", "format", "start", "time_scale", "time_shift", "rate_scale", "session_scale", "min_session",
            "max_session", "pools", "locations", "csv"]


def _map_section(ctx: _Ctx, raw: Any, path: str, fmt: str, columns: set[str]) -> Mapping_:
    m = _mapping(ctx, raw, path, ["by", "map", "spread", "default"], required=["by"])
    by = m["by"]
    if not isinstance(by, str) or not by:
        raise ctx.fail(path + ".by", "expected a field name")
    if fmt == "swf" and by not in SWF_KEYS:
        raise ctx.fail(path + ".by", f"an SWF trace can map by {', '.join(SWF_KEYS)}, not {by!r}")
    if fmt == "csv" and by not in columns:
        raise ctx.fail(path + ".by", f"no csv column mapped as {by!r} (mapped: {', '.join(sorted(columns))})")
    mp = m.get("map", {})
    if not isinstance(mp, dict):
        raise ctx.fail(path + ".map", "expected a mapping of trace values to names")
    pairs = []
    for k, v in mp.items():
        if not isinstance(v, str) or not v:
            raise ctx.fail(_join(path + ".map", str(k)), f"expected a name, got {v!r}")
        pairs.append((str(k), v))
    spread = tuple(str(x) for x in _list(ctx, m.get("spread", []), path + ".spread"))
    default = m.get("default")
    if default is not None and not isinstance(default, str):
        raise ctx.fail(path + ".default", f"expected a name, got {default!r}")
    return Mapping_(by, tuple(pairs), spread, default)


def validate_trace(ctx: _Ctx, raw: Any, path: str) -> TraceSpec:
    """The `trace:` section; the file is read now so a bad line fails before anything runs."""
    m = _mapping(ctx, raw, path, _ALLOWED, required=["path", "pools"])
    if not isinstance(m["path"], str) or not m["path"]:
        raise ctx.fail(path + ".path", "expected a file path")
    base = Path(ctx.source).parent
    file = Path(m["path"]) if Path(m["path"]).is_absolute() else base / m["path"]
    fmt = m.get("format") or ("csv" if ".csv" in file.name.lower() else "swf")
    if fmt not in ("swf", "csv"):
        raise ctx.fail(path + ".format", f"expected swf or csv, got {fmt!r}")
    csv_spec = None
    columns: set[str] = set()
    if fmt == "csv":
        c = _mapping(ctx, m.get("csv"), path + ".csv", ["columns", "delimiter", "time"], required=["columns"])
        cols = _mapping(ctx, c["columns"], path + ".csv.columns", list(CSV_ROLES), required=["arrival", "duration"])
        for role, col in cols.items():
            if not isinstance(col, str) or not col:
                raise ctx.fail(f"{path}.csv.columns.{role}", "expected a column name")
        delim = c.get("delimiter", ",")
        if not isinstance(delim, str) or len(delim) != 1:
            raise ctx.fail(path + ".csv.delimiter", f"expected one character, got {delim!r}")
        tkind = c.get("time", "seconds")
        if tkind not in ("seconds", "iso"):
            raise ctx.fail(path + ".csv.time", f"expected seconds or iso, got {tkind!r}")
        csv_spec = CsvSpec(tuple(cols.items()), delim, tkind)
        # Mappings refer to roles (pool, user, location) or directly to column names.
        columns = set(cols) | set(cols.values())
        csv_spec = CsvSpec(tuple(cols.items()), delim, tkind)
    elif "csv" in m:
        raise ctx.fail(path + ".csv", "only for format: csv")
    pools = _map_section(ctx, m["pools"], path + ".pools", fmt, columns)
    locations = _map_section(ctx, m["locations"], path + ".locations", fmt, columns) if "locations" in m else None
    if fmt == "csv":
        names = dict(csv_spec.columns)
        pools = Mapping_(names.get(pools.by, pools.by), pools.map, pools.spread, pools.default)
        if locations is not None:
            locations = Mapping_(names.get(locations.by, locations.by), locations.map, locations.spread,
                                 locations.default)
    spec = TraceSpec(
        path=str(file), format=fmt, pools=pools, locations=locations,
        start=_duration(ctx, m.get("start", 0), path + ".start"),
        time_scale=_number(ctx, m.get("time_scale", 1.0), path + ".time_scale", strict_min=True),
        time_shift=_duration(ctx, m.get("time_shift", 0), path + ".time_shift"),
        rate_scale=_number(ctx, m.get("rate_scale", 1.0), path + ".rate_scale", strict_min=True, maximum=100.0),
        session_scale=_number(ctx, m.get("session_scale", 1.0), path + ".session_scale", strict_min=True),
        min_session=_duration(ctx, m.get("min_session", 60), path + ".min_session"),
        max_session=_duration(ctx, m.get("max_session", "3d"), path + ".max_session", positive=True),
        csv=csv_spec, source=ctx.source)
    if spec.max_session < spec.min_session:
        raise ctx.fail(path + ".max_session", "must be at least min_session")
    for key, m_ in (("pools", pools),):
        for name in (*(v for _, v in m_.map), *m_.spread, m_.default):
            if name is not None and ctx.pools and name not in ctx.pools:
                raise ctx.fail(f"{path}.{key}", f"no pool named {name!r} in this scenario")
    if not file.exists():
        raise ctx.fail(path + ".path", f"no such trace file: {file}")
    load_jobs(spec)  # a bad line fails now, naming the file and line
    return spec


EXTRA_SECTIONS["trace"] = validate_trace
