"""The report's figures, as PNG bytes.

Figures are built with `matplotlib.figure.Figure` on an explicit Agg canvas, never through
`pyplot`: nothing is registered in pyplot's global figure list, the process-wide backend is left
alone, and a figure is freed as soon as its PNG is written. Time series arrive already sampled
(`reports.timeline`), so a year of events plots a few thousand points, not a million.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import StrMethodFormatter

from reports.timeline import STATES, Interval, Timeline

MAX_POINTS = 2000  # per series: enough to draw a year in detail, cheap to render

STATE_COLORS = {"booting": "#f2a541", "ready": "#3a86ff", "allocated": "#2a9d4b", "abandoned": "#8d6e63"}
OUTAGE_COLOR = "#d62828"
MAINT_COLOR = "#7f8fa6"
BACKOFF_COLOR = "#f77f00"


def new_figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global state)."""
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> bytes:
    """The figure as PNG bytes; metadata without the matplotlib version, so output is stable."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    fig.clear()
    return buf.getvalue()


def _time_axis(tl: Timeline) -> tuple[float, str]:
    """(seconds per unit, axis label): hours for up to three days, days beyond."""
    span = max(0.0, tl.end - tl.start)
    unit, name = (3600.0, "hours") if span <= 3 * 86400 else (86400.0, "days")
    if tl.time_base == "unix":
        import datetime as _dt

        origin = _dt.datetime.fromtimestamp(tl.start, tz=_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        return unit, f"{name} since {origin}"
    return unit, f"{name} since the start"


def _spans(intervals: Sequence[Interval], t0: float, unit: float, min_width: float) -> list[tuple[float, float]]:
    """(x start, width) per interval; a five-minute backoff in a year-long plot stays visible."""
    return [((i.start - t0) / unit, max((i.end - i.start) / unit, min_width)) for i in intervals]


def _bands(ax: Any, intervals: Sequence[Interval], t0: float, unit: float, min_width: float, color: str,
           alpha: float, hatch: str | None = None) -> None:
    if not intervals:
        return
    verts = [[(x, 0), (x, 1), (x + w, 1), (x + w, 0)] for x, w in _spans(intervals, t0, unit, min_width)]
    coll = PolyCollection(verts, transform=ax.get_xaxis_transform(), facecolor=color, alpha=alpha,
                          edgecolor=color if hatch else "none", hatch=hatch, linewidth=0)
    ax.add_collection(coll, autolim=False)


def _all(intervals: Mapping[str, list[Interval]]) -> list[Interval]:
    return [i for cloud in sorted(intervals) for i in intervals[cloud]]


def plot_timeline(tl: Timeline, *, note: str = "") -> bytes:
    """(a) Per pool: ready, booting, allocated (and abandoned) VMs over time, outages (red) and
    maintenance (grey) shaded; below, one row per cloud with its outages, maintenance and backoffs.
    `note` (e.g. how the series was sampled) goes in each pool's title."""
    pools = sorted(tl.pools)
    clouds = sorted(set(tl.outages) | set(tl.maintenance) | set(tl.backoff))
    n_rows = max(1, len(pools)) + (1 if clouds else 0)
    ratios = [3.0] * max(1, len(pools)) + ([0.35 * len(clouds) + 0.6] if clouds else [])
    fig = new_figure(11.0, sum(ratios) * 0.75 + 0.8)
    axes = fig.subplots(n_rows, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": ratios})[:, 0]
    unit, xlabel = _time_axis(tl)
    t0 = tl.start
    x_end = max(tl.end - t0, 0.0) / unit or 1.0
    min_width = x_end / 400
    outages, maint, backoff = _all(tl.outages), _all(tl.maintenance), _all(tl.backoff)
    shown: set[str] = set()
    if not pools:
        axes[0].text(0.5, 0.5, "no VMs in this log", ha="center", va="center", transform=axes[0].transAxes)
    for ax, pool in zip(axes, pools, strict=False):
        s = tl.pools[pool]
        x = (s.t - t0) / unit
        # The big series first, so the small ones (the reserve, boots) stay visible on top.
        for state in ("allocated", "abandoned", "ready", "booting"):
            y = getattr(s, state)
            if state == "abandoned" and not y.any():
                continue
            shown.add(state)
            ax.plot(x, y, drawstyle="steps-post", color=STATE_COLORS[state], linewidth=1.0)
        # Outages and maintenance shade every pool; backoffs (frequent, short) only in the cloud rows,
        # where they would otherwise bury the rest.
        _bands(ax, maint, t0, unit, min_width, MAINT_COLOR, 0.25)
        _bands(ax, outages, t0, unit, min_width, OUTAGE_COLOR, 0.22)
        ax.set_ylabel("VMs")
        ax.set_title(f"pool {pool}{note}", loc="left", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    handles: list[Any] = [Line2D([], [], color=STATE_COLORS[st], linewidth=1.5) for st in STATES if st in shown]
    labels = [st for st in STATES if st in shown]
    for color, label, items in ((OUTAGE_COLOR, "outage / slow", outages), (MAINT_COLOR, "maintenance", maint),
                                (BACKOFF_COLOR, "backed off", backoff)):
        if items:
            handles.append(Patch(facecolor=color, alpha=0.6, edgecolor="none"))
            labels.append(label)
    if handles:
        fig.legend(handles, labels, loc="outside upper center", fontsize=8, ncol=len(labels), frameon=False)
    if clouds:
        ax = axes[-1]
        # One row per cloud in three lanes (outage, maintenance, backoff), so none hides another.
        for row, cloud in enumerate(clouds):
            for lane, (items, color) in enumerate(((tl.outages.get(cloud, []), OUTAGE_COLOR),
                                                   (tl.maintenance.get(cloud, []), MAINT_COLOR),
                                                   (tl.backoff.get(cloud, []), BACKOFF_COLOR))):
                if items:
                    ax.broken_barh(_spans(items, t0, unit, min_width), (row + 0.2 - lane * 0.25, 0.22),
                                   facecolors=color, edgecolor="none", linewidth=0)
        ax.set_yticks(range(len(clouds)), clouds)
        ax.set_ylim(-0.6, len(clouds) - 0.4)
        ax.set_title("clouds: outage or slow period (red), maintenance (grey), backed off by the policy (orange)",
                     loc="left", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    axes[-1].set_xlim(0, x_end)
    axes[-1].set_xlabel(xlabel)
    return to_png(fig)


def plot_waits(waits: Sequence[float], p95: float | None) -> bytes:
    """(b) The wait-time distribution: histogram (left axis), CDF (right axis), the p95 line."""
    fig = new_figure(8.0, 3.6)
    ax = fig.subplots()
    w = np.asarray(waits, dtype=float)
    if len(w) == 0:
        ax.text(0.5, 0.5, "no VM was assigned in this log", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return to_png(fig)
    zero = float(np.mean(w == 0.0))
    top = float(w.max()) or 1.0
    ax.hist(w, bins=60, range=(0.0, top), color="#3a86ff", alpha=0.75)
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.7)  # a single request in a bin stays visible on the log scale
    ax.set_xlabel("wait from request to VM (s)")
    ax.set_ylabel("requests (log scale)")
    cdf = ax.twinx()
    ws = np.sort(w)
    # At most MAX_POINTS quantiles: the CDF's shape without plotting every request.
    if len(ws) <= MAX_POINTS:
        cdf.plot(ws, np.arange(1, len(ws) + 1) / len(ws), drawstyle="steps-post", color="#222222", linewidth=1.2)
    else:
        q = np.linspace(0.0, 1.0, MAX_POINTS)
        cdf.plot(np.quantile(ws, q), q, color="#222222", linewidth=1.2)
    cdf.set_ylim(0, 1.02)
    cdf.set_ylabel("share of requests served within")
    if p95 is not None:
        ax.axvline(p95, color=OUTAGE_COLOR, linestyle="--", linewidth=1.2)
        ax.text(p95, 0.5, f" p95 = {p95:.4g} s", color=OUTAGE_COLOR, transform=ax.get_xaxis_transform(),
                va="center", fontsize=9, backgroundcolor="white")
    ax.set_title(f"{len(w):,} assignments; {zero:.1%} waited 0 s (a ready VM was there)", loc="left", fontsize=10)
    return to_png(fig)


def plot_vm_hours(per_cloud: Mapping[str, Mapping[str, Any]]) -> bytes:
    """(c) VM-hours by state per cloud, stacked bars."""
    clouds = sorted(per_cloud)
    fig = new_figure(max(5.0, 1.2 * len(clouds) + 3.0), 3.6)
    ax = fig.subplots()
    if not clouds:
        ax.text(0.5, 0.5, "no clouds in this log", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return to_png(fig)
    bottom = np.zeros(len(clouds))
    for state in STATES:
        h = np.array([per_cloud[c]["vm_hours"][state] for c in clouds], dtype=float)
        ax.bar(clouds, h, bottom=bottom, color=STATE_COLORS[state], label=state, width=0.6)
        bottom += h
    ax.set_ylabel("VM-hours")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("VM-hours by state per cloud", loc="left", fontsize=10)
    return to_png(fig)
