"""VM lifecycles and cloud conditions reconstructed from events alone, in one pass.

`scan(events)` replays an event log (the twin's `events.jsonl` or the live VMM's usage logs, the
same schema, `core.events`) through one small state machine per VM:

    launch -> booting;  ready -> ready;  assign -> allocated;  abandon -> abandoned;
    terminate | gone | boot_failed | launch_failed -> ended.

`release` changes nothing: the VM is still held (and billed) until it is terminated or gone, so
that time stays with the allocation that caused it. A VM first seen mid-log (a live log that
starts while it runs) is counted from its first event, in the state that event puts it in.
Intervals still open at the log's end (the run header's `details.end`, else the last event's `t`)
are closed there.

`scan` is the single pass both the metrics (`reports.metrics`) and the time series
(`timeline`) are derived from, so a report reads a year of events once. It is plain Python on
purpose: about 1.5 million events take a couple of seconds, and there is nothing to vectorise
before the per-VM state is known.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, NamedTuple

import numpy as np

from core.events import Event

STATES = ("booting", "ready", "allocated", "abandoned")
BOOTING, READY, ALLOCATED, ABANDONED = range(4)
ENDED = -1  # not alive: not yet seen, or terminated / gone / failed
UNKNOWN = "unknown"  # the name used when an event lacks its cloud or pool

_ENDING = frozenset({"terminate", "gone", "boot_failed", "launch_failed"})


def in_time_order(events: Iterable[Event]) -> Sequence[Event]:
    """The events as a sequence ordered by `t` (stable: ties keep their order); no copy if already so."""
    evs = events if isinstance(events, list | tuple) else list(events)
    ts = [e.t for e in evs]
    if all(map(operator.le, ts, islice(ts, 1, None))):
        return evs
    return sorted(evs, key=operator.attrgetter("t"))


class Interval(NamedTuple):
    """A period of a cloud's condition, in the log's time base; `label` is e.g. the outage mode."""

    start: float
    end: float
    label: str = ""


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


@dataclass
class Scan:
    """What one pass over a log gathered. Times in seconds of the log's time base.

    Accumulators are lists indexed by state (`BOOTING`..`ABANDONED`) plus, at index 4, the sum of
    cost-per-hour x seconds (divide by 3600 for money).
    """

    start: float
    end: float
    n_events: int
    by_kind: dict[str, int]
    header: dict[str, Any]
    cloud_rates: dict[str, float]
    cloud_acc: dict[str, list[float]]
    pool_acc: dict[str, list[float]]
    cloud_counts: dict[str, list[int]]  # launches, failed boots, launch failures, api errors
    pool_counts: dict[str, list[int]]  # requests, assigns, launches
    waits: dict[str, list[float]]  # per pool, from assign events
    terminations: dict[str, int]
    outages: dict[str, list[Interval]]
    maintenance: dict[str, list[Interval]]
    backoff: dict[str, list[Interval]]
    status_changes: list[tuple[float, str, str, str]]  # (t, cloud, status, verdict)
    # Per pool, when `record`: parallel lists (t, from state, to state) of every VM state change.
    changes: dict[str, tuple[list[float], list[int], list[int]]] = field(default_factory=dict)


def scan(events: Iterable[Event], *, record: bool = False) -> Scan:
    """Replay `events` once (see the module docstring); `record` keeps every state change per pool."""
    evs = in_time_order(events)
    by_kind: dict[str, int] = {}
    header: dict[str, Any] = {}
    rates: dict[str, float] = {}
    hdr_start: float | None = None
    hdr_end: float | None = None
    # vm id -> [state, since, cloud acc, pool acc, rate, pool name]
    vms: dict[str, list[Any]] = {}
    cloud_acc: dict[str, list[float]] = {}
    pool_acc: dict[str, list[float]] = {}
    cloud_counts: dict[str, list[int]] = {}
    pool_counts: dict[str, list[int]] = {}
    waits: dict[str, list[float]] = {}
    terminations: dict[str, int] = {}
    outages: dict[str, list[Interval]] = {}
    maintenance: dict[str, list[Interval]] = {}
    backoff: dict[str, list[Interval]] = {}
    open_outage: dict[str, tuple[float, str]] = {}
    open_maint: dict[str, tuple[float, float | None]] = {}
    open_backoff: dict[str, tuple[float, str]] = {}
    status_changes: list[tuple[float, str, str, str]] = []
    changes: dict[str, tuple[list[float], list[int], list[int]]] = {}

    def cacc(c: str) -> list[float]:
        a = cloud_acc.get(c)
        if a is None:
            a = cloud_acc[c] = [0.0, 0.0, 0.0, 0.0, 0.0]
            cloud_counts.setdefault(c, [0, 0, 0, 0])
        return a

    def pacc(p: str) -> list[float]:
        a = pool_acc.get(p)
        if a is None:
            a = pool_acc[p] = [0.0, 0.0, 0.0, 0.0, 0.0]
            pool_counts.setdefault(p, [0, 0, 0])
        return a

    def ccount(c: str) -> list[int]:
        n = cloud_counts.get(c)
        if n is None:
            cacc(c)
            n = cloud_counts[c]
        return n

    def pcount(p: str) -> list[int]:
        n = pool_counts.get(p)
        if n is None:
            pacc(p)
            n = pool_counts[p]
        return n

    def new_vm(e: Event) -> list[Any]:
        cloud = e.cloud or UNKNOWN
        pool = e.pool or UNKNOWN
        rec = [ENDED, e.t, cacc(cloud), pacc(pool), rates.get(cloud, 0.0), pool]
        vms[e.vm] = rec  # type: ignore[index]
        return rec

    def move(rec: list[Any], t: float, new: int) -> None:
        s = rec[0]
        if s == new:
            return
        if s != ENDED:
            dt = t - rec[1]
            if dt > 0:
                ca, pa = rec[2], rec[3]
                ca[s] += dt
                pa[s] += dt
                c = dt * rec[4]
                ca[4] += c
                pa[4] += c
        if record:
            ch = changes.get(rec[5])
            if ch is None:
                ch = changes[rec[5]] = ([], [], [])
            ch[0].append(t)
            ch[1].append(s)
            ch[2].append(new)
        rec[0] = new
        rec[1] = t

    for e in evs:
        k = e.kind
        t = e.t
        by_kind[k] = by_kind.get(k, 0) + 1
        if k == "request":
            pcount(e.pool or UNKNOWN)[0] += 1
        elif k == "assign":
            pool = e.pool or UNKNOWN
            pcount(pool)[1] += 1
            w = e.details.get("wait_s")
            if w is not None:
                wl = waits.get(pool)
                if wl is None:
                    wl = waits[pool] = []
                wl.append(w)
            if e.vm is not None:
                rec = vms.get(e.vm) or new_vm(e)
                move(rec, t, ALLOCATED)
        elif k == "ready":
            if e.vm is not None:
                move(vms.get(e.vm) or new_vm(e), t, READY)
        elif k == "launch":
            cloud = e.cloud or UNKNOWN
            ccount(cloud)[0] += 1
            pcount(e.pool or UNKNOWN)[2] += 1
            if e.vm is not None:
                rec = vms.get(e.vm)
                if rec is not None:
                    move(rec, t, ENDED)  # an id launched again starts a new life
                rec = new_vm(e)
                rate = e.details.get("cost_per_hour")
                if rate is not None:
                    rec[4] = rate
                move(rec, t, BOOTING)
        elif k in _ENDING:
            if k == "terminate":
                reason = e.details.get("reason") or "unspecified"
                terminations[reason] = terminations.get(reason, 0) + 1
            elif k == "boot_failed":
                ccount(e.cloud or UNKNOWN)[1] += 1
            elif k == "launch_failed":
                ccount(e.cloud or UNKNOWN)[2] += 1
            if e.vm is not None:
                rec = vms.get(e.vm)
                if rec is not None:
                    move(rec, t, ENDED)
        elif k == "abandon":
            if e.vm is not None:
                move(vms.get(e.vm) or new_vm(e), t, ABANDONED)
        elif k == "api_error":
            ccount(e.cloud or UNKNOWN)[3] += 1
        elif k == "cloud_down":
            cloud = e.cloud or UNKNOWN
            if cloud not in open_outage:
                open_outage[cloud] = (t, str(e.details.get("mode") or "down"))
        elif k == "cloud_up":
            cloud = e.cloud or UNKNOWN
            o = open_outage.pop(cloud, None)
            if o is not None:
                outages.setdefault(cloud, []).append(Interval(o[0], t, o[1]))
        elif k == "maintenance_start":
            cloud = e.cloud or UNKNOWN
            if cloud not in open_maint:
                open_maint[cloud] = (t, _number(e.details.get("end")))
        elif k == "maintenance_end":
            cloud = e.cloud or UNKNOWN
            m = open_maint.pop(cloud, None)
            if m is not None:
                maintenance.setdefault(cloud, []).append(Interval(m[0], t, "maintenance"))
        elif k == "cloud_status":
            cloud = e.cloud or UNKNOWN
            status = str(e.details.get("status") or "")
            status_changes.append((t, cloud, status, str(e.details.get("verdict") or "")))
            if status == "backoff":
                if cloud not in open_backoff:
                    open_backoff[cloud] = (t, str(e.details.get("verdict") or "backoff"))
            elif cloud in open_backoff:
                t0, why = open_backoff.pop(cloud)
                backoff.setdefault(cloud, []).append(Interval(t0, t, why))
        elif k == "run":
            d = e.details
            if not header:
                header = dict(d)
            s, en = _number(d.get("start")), _number(d.get("end"))
            if s is not None:
                hdr_start = s if hdr_start is None else min(hdr_start, s)
            if en is not None:
                hdr_end = en if hdr_end is None else max(hdr_end, en)
            clouds = d.get("clouds")
            if isinstance(clouds, dict):
                for name, spec in clouds.items():
                    rate = _number(spec.get("cost_per_hour")) if isinstance(spec, dict) else None
                    if rate is not None:
                        rates[name] = rate
                    cacc(name)
            pools = d.get("pools")
            if isinstance(pools, list):
                for p in pools:
                    name = p.get("name") if isinstance(p, dict) else p
                    if isinstance(name, str):
                        pacc(name)

    first = evs[0].t if evs else 0.0
    last = evs[-1].t if evs else 0.0
    start = hdr_start if hdr_start is not None else first
    end = hdr_end if hdr_end is not None else last
    for rec in vms.values():
        s = rec[0]
        if s != ENDED and end > rec[1]:
            # Closed by the log's end: counted, but not recorded as a state change.
            dt = end - rec[1]
            ca, pa = rec[2], rec[3]
            ca[s] += dt
            pa[s] += dt
            ca[4] += dt * rec[4]
            pa[4] += dt * rec[4]
    for cloud, (t0, mode) in open_outage.items():
        outages.setdefault(cloud, []).append(Interval(t0, max(t0, end), mode))
    for cloud, (t0, m_end) in open_maint.items():
        close = end if m_end is None else min(m_end, end)
        maintenance.setdefault(cloud, []).append(Interval(t0, max(t0, close), "maintenance"))
    for cloud, (t0, why) in open_backoff.items():
        backoff.setdefault(cloud, []).append(Interval(t0, max(t0, end), why))

    return Scan(start=start, end=end, n_events=len(evs), by_kind=by_kind, header=header, cloud_rates=rates,
                cloud_acc=cloud_acc, pool_acc=pool_acc, cloud_counts=cloud_counts, pool_counts=pool_counts,
                waits=waits, terminations=terminations, outages=outages, maintenance=maintenance,
                backoff=backoff, status_changes=status_changes, changes=changes)


@dataclass(frozen=True, eq=False)
class PoolSeries:
    """How many VMs of one pool were in each state over time: a step function (value holds until
    the next `t`)."""

    t: np.ndarray
    booting: np.ndarray
    ready: np.ndarray
    allocated: np.ndarray
    abandoned: np.ndarray


@dataclass(frozen=True, eq=False)
class Timeline:
    """Per pool VM counts over time and per cloud outages, maintenance and backoff periods."""

    start: float
    end: float
    time_base: str  # "sim" (seconds from the scenario start) or "unix"
    pools: dict[str, PoolSeries]
    outages: dict[str, list[Interval]]
    maintenance: dict[str, list[Interval]]
    backoff: dict[str, list[Interval]]
    status_changes: list[tuple[float, str, str, str]]


def timeline(events: Iterable[Event], step_s: float | None = None, *, agg: str = "sample") -> Timeline:
    """Per pool ready/booting/allocated/abandoned counts, and cloud intervals, from `events`.

    With `step_s` None the series holds the exact change points. Otherwise there is one point every
    `step_s` seconds from the log's start to its end (inclusive): with `agg="sample"` the count at
    that instant, with `agg="max"` the most there were from that instant to the next point (a
    year on a page at a few hours a point keeps its peaks).
    """
    return timeline_from_scan(scan(events, record=True), step_s, agg=agg)


def timeline_from_scan(sc: Scan, step_s: float | None = None, *, agg: str = "sample") -> Timeline:
    """`timeline` from a `scan(..., record=True)` already made (the report makes one pass)."""
    if step_s is not None and not step_s > 0:
        raise ValueError(f"step_s must be positive, got {step_s!r}")
    if agg not in ("sample", "max"):
        raise ValueError(f"agg must be 'sample' or 'max', got {agg!r}")
    pools: dict[str, PoolSeries] = {}
    for pool in sorted(set(sc.pool_acc) | set(sc.changes)):
        ts_l, frm_l, to_l = sc.changes.get(pool, ([], [], []))
        ts = np.asarray(ts_l, dtype=float)
        n = len(ts)
        # One row of +1/-1 per change; column 4 soaks up "no state" (ENDED is -1, i.e. column 4).
        delta = np.zeros((n, 5), dtype=np.int64)
        rows = np.arange(n)
        delta[rows, np.asarray(to_l, dtype=np.int64)] += 1
        delta[rows, np.asarray(frm_l, dtype=np.int64)] -= 1
        counts = np.cumsum(delta[:, :4], axis=0)
        if n:
            keep = np.append(ts[1:] != ts[:-1], True)  # the last change at each instant wins
            ts, counts = ts[keep], counts[keep]
        if step_s is None:
            t_out = np.concatenate(([sc.start], ts, [max(sc.end, ts[-1] if len(ts) else sc.end)]))
            c_out = np.vstack((np.zeros((1, 4), dtype=np.int64), counts,
                               counts[-1:] if len(counts) else np.zeros((1, 4), dtype=np.int64)))
        else:
            t_out = sc.start + step_s * np.arange(int(np.floor((sc.end - sc.start) / step_s)) + 1)
            if n:
                idx = np.searchsorted(ts, t_out, side="right") - 1
                c_out = np.where((idx >= 0)[:, None], counts[np.maximum(idx, 0)], 0)
                if agg == "max":
                    c_out = np.maximum(c_out, _max_between(ts, counts, t_out))
            else:
                c_out = np.zeros((len(t_out), 4), dtype=np.int64)
        pools[pool] = PoolSeries(t=t_out, booting=c_out[:, BOOTING], ready=c_out[:, READY],
                                 allocated=c_out[:, ALLOCATED], abandoned=c_out[:, ABANDONED])
    time_base = str(sc.header.get("time_base") or "sim")
    return Timeline(start=sc.start, end=sc.end, time_base=time_base, pools=pools, outages=sc.outages,
                    maintenance=sc.maintenance, backoff=sc.backoff, status_changes=sc.status_changes)


def _max_between(ts: np.ndarray, counts: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per edge k, the column-wise max of the counts changed strictly between edges k and k+1 (0 if none).

    One `maximum.reduceat` over interleaved (first, past-last) index pairs; empty ranges are masked.
    """
    first = np.searchsorted(ts, edges, side="right")
    past = np.searchsorted(ts, np.append(edges[1:], np.inf), side="left")
    padded = np.vstack((counts, np.zeros((1, counts.shape[1]), dtype=counts.dtype)))
    pairs = np.empty(2 * len(edges), dtype=np.int64)
    pairs[0::2], pairs[1::2] = first, np.maximum(past, first)
    inner = np.maximum.reduceat(padded, pairs, axis=0)[0::2]
    return np.where((past > first)[:, None], inner, 0)
