"""Headline metrics of several runs side by side (columns = settings, rows = metrics).

`daaas twin compare` passes `[(setting label, metrics), ...]`. `oracle_vm_hours` (issue 3) adds a
"VM-hours / oracle" row: each run's total VM-hours over the clairvoyant oracle's, the floor for
zero wait; give one number for all columns or one per label.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reports.html import fmt_value
from reports.html import table as html_table
from reports.metrics import HEADLINE, lookup, round_sig

OracleHours = float | Mapping[str, float] | None


def _oracle_for(oracle: OracleHours, label: str) -> float | None:
    if oracle is None:
        return None
    if isinstance(oracle, Mapping):
        return oracle.get(label)
    return float(oracle)


def compare_rows(rows: Sequence[tuple[str, Mapping[str, Any]]], *, oracle_vm_hours: OracleHours = None
                 ) -> list[tuple[str, list[Any]]]:
    """The table as data: [(metric label, [value per setting])], headline rows then per-cloud shares."""
    out: list[tuple[str, list[Any]]] = []
    for label, path in HEADLINE:
        out.append((label, [lookup(m, path) for _, m in rows]))
        if path == ("vm_hours", "total") and oracle_vm_hours is not None:
            ratios: list[Any] = []
            for name, m in rows:
                oracle, total = _oracle_for(oracle_vm_hours, name), lookup(m, path)
                ratios.append(round_sig(total / oracle, 4) if oracle and total is not None else None)
            out.append(("VM-hours / oracle", ratios))
    clouds = sorted({c for _, m in rows for c in (m.get("per_cloud") or {})})
    for cloud in clouds:
        out.append((f"share {cloud}", [lookup(m, ("per_cloud", cloud, "share")) for _, m in rows]))
    return out


def compare_table(rows: Sequence[tuple[str, Mapping[str, Any]]], *, oracle_vm_hours: OracleHours = None) -> str:
    """A plain-text table: one column per setting, one row per headline metric."""
    if not rows:
        return "(no runs to compare)\n"
    data = compare_rows(rows, oracle_vm_hours=oracle_vm_hours)
    header = ["metric"] + [name for name, _ in rows]
    body = [[label] + [fmt_value(v) for v in values] for label, values in data]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(widths[0]) if i == 0 else h.rjust(widths[i]) for i, h in enumerate(header)),
             "  ".join("-" * w for w in widths)]
    for r in body:
        lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    return "\n".join(lines) + "\n"


def compare_html(rows: Sequence[tuple[str, Mapping[str, Any]]], *, oracle_vm_hours: OracleHours = None) -> str:
    """The same table as an HTML fragment (put it in a `reports.html.Section`)."""
    if not rows:
        return "<p>(no runs to compare)</p>"
    data = compare_rows(rows, oracle_vm_hours=oracle_vm_hours)
    return html_table(["metric"] + [name for name, _ in rows], [[label, *values] for label, values in data])


__all__ = ["compare_html", "compare_rows", "compare_table"]
