"""Reports: metrics, time series, plots and a self-contained HTML report, from events alone.

Every number comes from the shared event schema (`core.events`), so one report reads the twin's
`events.jsonl` and the live VMM's usage logs alike.

- `compute_metrics(events) -> dict` (`reports.metrics`): the JSON-ready headline metrics;
- `timeline(events, step_s)` (`reports.timeline`): per pool VM counts over time, cloud intervals;
- `render_report(events, out_dir, title=...)`, `write_outputs(events, out_dir, title=...)`
  (`reports.render`): report.html, and all three outputs at once;
- `compare_table(rows)`, `compare_html(rows)` (`reports.compare`): runs side by side.

The rendering functions are imported lazily, so `from reports import compute_metrics` does not
load matplotlib.
"""
from __future__ import annotations

from typing import Any

from reports.compare import compare_html, compare_table
from reports.metrics import compute_metrics, dumps_metrics
from reports.timeline import timeline

_LAZY = {"render_report", "write_outputs"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from reports import render

        return getattr(render, name)
    raise AttributeError(f"module 'reports' has no attribute {name!r}")


__all__ = ["compare_html", "compare_table", "compute_metrics", "dumps_metrics", "render_report", "timeline",
           "write_outputs"]
