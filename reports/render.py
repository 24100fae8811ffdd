"""Render a run's report, and write a run's outputs all at once or not at all.

`render_report(events, out_dir, title=...)` writes `out_dir/report.html`; `write_outputs` writes
`report.html`, `metrics.json` and `events.jsonl` into a temporary directory beside `out_dir` and
moves them into place only when all three are complete, so a failure leaves nothing half-written.
Both read the events once (`reports.timeline.scan`) for the metrics, the time series and the plots.
"""
from __future__ import annotations

import json
import json.encoder
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from core.events import Event
from reports import plots
from reports.html import Section, image, page, table
from reports.metrics import HEADLINE, RECLAIM_REASONS, dumps_metrics, lookup, metrics_from_scan
from reports.timeline import STATES, Scan, in_time_order, scan, timeline_from_scan

OUTPUTS = ("report.html", "metrics.json", "events.jsonl")
MAX_LISTED_INTERVALS = 40  # per kind in the report's table of cloud events; the plot shows them all


def _timeline_step(sc: Scan) -> float | None:
    """Exact change points when they are few; else a sample every horizon / MAX_POINTS seconds."""
    changes = max((len(c[0]) for c in sc.changes.values()), default=0)
    if changes <= plots.MAX_POINTS:
        return None
    return max((sc.end - sc.start) / plots.MAX_POINTS, 1e-3)


def _duration(seconds: float) -> str:
    for unit, name in ((86400.0, "d"), (3600.0, "h"), (60.0, "min")):
        if seconds >= unit:
            return f"{seconds / unit:.3g} {name}"
    return f"{seconds:.3g} s"


def _facts(sc: Scan, metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    h = sc.header
    facts: list[tuple[str, Any]] = []
    for key in ("scenario", "seed"):
        if h.get(key) is not None:
            facts.append((key, h[key]))
    facts.append(("time base", h.get("time_base") or "sim"))
    facts.append(("hours covered", metrics.get("horizon_h")))
    facts.append(("events", sc.n_events))
    return facts


def _interval_rows(tl_intervals: Mapping[str, Sequence[Any]], kind: str, t0: float) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for cloud in sorted(tl_intervals):
        items = tl_intervals[cloud]
        for i in items[:MAX_LISTED_INTERVALS]:
            rows.append([cloud, kind, i.label, (i.start - t0) / 3600.0, (i.end - i.start) / 3600.0])
        if len(items) > MAX_LISTED_INTERVALS:
            rows.append([cloud, kind, f"... and {len(items) - MAX_LISTED_INTERVALS} more", None, None])
    return rows


def build_html(sc: Scan, *, title: str, metrics: Mapping[str, Any] | None = None,
               extra_sections: Sequence[Section] = ()) -> str:
    """The report page from a `scan(..., record=True)`; `extra_sections` go after the standard ones."""
    m = metrics if metrics is not None else metrics_from_scan(sc)
    step = _timeline_step(sc)
    tl = timeline_from_scan(sc, step, agg="max")
    note = "" if step is None else f"  (most VMs in each {_duration(step)})"
    waits = [w for pool in sorted(sc.waits) for w in sc.waits[pool]]
    per_cloud = m.get("per_cloud") or {}
    per_pool = m.get("per_pool") or {}

    headline = [(label, lookup(m, path)) for label, path in HEADLINE]
    headline.insert(1, ("assigned", m.get("assigned")))
    headline.append(("warnings", m.get("warnings")))
    for cloud in sorted(per_cloud):
        headline.append((f"share of launches: {cloud}", per_cloud[cloud].get("share")))
    sections = [Section("Headline", table(["metric", "value"], headline))]

    sections.append(Section("Per cloud", table(
        ["cloud", "launches", "share", *(f"VM-h {s}" for s in STATES), "VM-h total", "cost", "failed boots",
         "launch failures", "API errors"],
        [[c, v["launches"], v["share"], *(v["vm_hours"][s] for s in STATES), v["vm_hours"]["total"], v["cost"],
          v["failed_boots"], v["launch_failures"], v["api_errors"]] for c, v in sorted(per_cloud.items())])))
    sections.append(Section("Per pool", table(
        ["pool", "requests", "assigned", "unserved", "wait p50 (s)", "wait p95 (s)", "wait max (s)", "launches",
         *(f"VM-h {s}" for s in STATES), "VM-h total", "cost"],
        [[p, v["requests"], v["assigned"], v["unserved"], v["wait_s"]["p50"], v["wait_s"]["p95"],
          v["wait_s"]["max"], v["launches"], *(v["vm_hours"][s] for s in STATES), v["vm_hours"]["total"],
          v["cost"]] for p, v in sorted(per_pool.items())])))

    sections.append(Section("VMs per pool over time",
                            image(plots.plot_timeline(tl, note=note), "VMs per pool over time")
                            + '<p class="note">Red: cloud outages or slow periods; grey: planned maintenance; '
                              "orange: the policy backed a cloud off.</p>"))
    sections.append(Section("Wait from request to VM",
                            image(plots.plot_waits(waits, lookup(m, ("wait_s", "p95"))), "wait-time distribution")))
    sections.append(Section("VM-hours by state per cloud",
                            image(plots.plot_vm_hours(per_cloud), "VM-hours by state per cloud")
                            + '<p class="note">Ready VM-hours are the idle cost of the reserve.</p>'))

    terms = m.get("terminations") or {}
    sections.append(Section("Terminations by reason", table(
        ["reason", "VMs", "reclaim"],
        [[r, n, "yes" if r in RECLAIM_REASONS else ""] for r, n in sorted(terms.items())])))
    rows = (_interval_rows(tl.outages, "outage", tl.start) + _interval_rows(tl.maintenance, "maintenance", tl.start)
            + _interval_rows(tl.backoff, "backoff", tl.start))
    if rows:
        sections.append(Section("Cloud events", table(
            ["cloud", "kind", "detail", "start (h from log start)", "hours"], rows)))
    sections += list(extra_sections)
    return page(title, _facts(sc, m), sections)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def render_report(events: Iterable[Event], out_dir: str | os.PathLike[str], *, title: str,
                  metrics: Mapping[str, Any] | None = None, extra_sections: Sequence[Section] = ()) -> Path:
    """Write `out_dir/report.html` (self-contained) and return its path.

    `metrics`, if given, is used for the tables instead of recomputing them from `events`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text = build_html(scan(events, record=True), title=title, metrics=metrics, extra_sections=extra_sections)
    fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".html.tmp", dir=out)
    os.close(fd)
    try:
        _write_text(Path(tmp), text)
        os.replace(tmp, out / "report.html")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out / "report.html"


def _line_encoder() -> Callable[[dict[str, Any]], str]:
    """A function giving exactly `Event.to_json()`'s text for an event's dict.

    `json.dumps` with non-default separators builds a new encoder on every call; for a year of
    events that is most of the cost of writing them. The C encoder made once, with the same
    settings (separators (",", ":"), no key sorting, ASCII escapes, NaN allowed), is about twice as
    fast and gives identical text (a test holds it to `to_json`).
    """
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(separators=(",", ":"), sort_keys=False).encode

    def default(o: Any) -> Any:
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    enc = c_make_encoder(None, default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    return lambda d: "".join(enc(d, 0))


def write_events(events: Iterable[Event], path: str | os.PathLike[str]) -> None:
    """One `Event.to_json()` a line."""
    enc = _line_encoder()
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        buf: list[str] = []
        for e in events:
            buf.append(enc({"t": e.t, "kind": e.kind, "pool": e.pool, "cloud": e.cloud, "vm": e.vm,
                            "user": e.user, "details": e.details}))
            if len(buf) >= 10000:
                buf.append("")
                f.write("\n".join(buf))
                buf.clear()
        if buf:
            buf.append("")
            f.write("\n".join(buf))


def write_outputs(events: Iterable[Event], out_dir: str | os.PathLike[str], *, title: str,
                  extra_sections: Sequence[Section] = ()) -> dict[str, Any]:
    """Write report.html, metrics.json and events.jsonl into `out_dir` together; return the metrics.

    Everything is written to a temporary directory beside `out_dir` first and moved into place at
    the end; on any failure the temporary directory is removed and `out_dir` is left as it was.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    parent = out.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    evs = in_time_order(events)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the output directory should not be
        sc = scan(evs, record=True)
        metrics = metrics_from_scan(sc)
        _write_text(tmp / "metrics.json", dumps_metrics(metrics))
        _write_text(tmp / "report.html", build_html(sc, title=title, metrics=metrics, extra_sections=extra_sections))
        write_events(evs, tmp / "events.jsonl")
        if out.is_dir():
            for name in OUTPUTS:
                os.replace(tmp / name, out / name)
            tmp.rmdir()
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return metrics
