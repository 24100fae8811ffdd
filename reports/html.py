"""A self-contained HTML page: inline CSS, PNGs as base64 data URIs, no external links.

A page is a title, a few key/value facts and a list of `Section`s, each an already-escaped HTML
body. Later reports (the oracle ratio, a sweep's Pareto front) add sections; nothing here knows
what a section holds.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
p.facts { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
p.note { color: #555; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class Section:
    """One titled part of a page; `body` is HTML (build it with `table`, `image`, `esc`)."""

    title: str
    body: str


def esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def fmt_value(v: Any) -> str:
    """A metric for people: thousands separators, about four significant digits, '-' for none."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return f"{int(v):,}" if abs(v) >= 1000 else f"{v:g}"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def image(png: bytes, alt: str) -> str:
    """An <img> carrying the PNG itself as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A table; the first column is a label, numbers are right-aligned and formatted."""
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            if i > 0 and (v is None or isinstance(v, int | float)):
                cells.append(f'<td class="num">{esc(fmt_value(v))}</td>')
            else:
                cells.append(f"<td>{esc(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def page(title: str, facts: Sequence[tuple[str, Any]], sections: Sequence[Section]) -> str:
    """The whole document."""
    fact_line = " &middot; ".join(f"{esc(k)}: <b>{esc(fmt_value(v))}</b>" for k, v in facts)
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>",
             f"<h1>{esc(title)}</h1>", f'<p class="facts">{fact_line}</p>']
    for s in sections:
        parts += [f"<h2>{esc(s.title)}</h2>", s.body]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)
