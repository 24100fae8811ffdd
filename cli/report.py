"""`daaas report`: the run report (report.html, metrics.json, events.jsonl) from event logs.

    daaas report EVENTS.jsonl -o DIR [--title T]
    daaas report --from-logs LOGDIR -o DIR [--title T]

`--from-logs` reads every `*.jsonl` in LOGDIR (sorted by name) and merges their events by time,
so the live VMM's usage logs give the same report as a twin run. A bad line stops everything with
`file:line: reason` and exit status 2; nothing is written.
"""
from __future__ import annotations

import argparse
import operator
import sys
from pathlib import Path

from cli import UsageError
from core.events import Event, EventFormatError, parse_lines


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="render a report from an event log or a directory of usage logs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("events", nargs="?", metavar="EVENTS.jsonl", help="one event log")
    p.add_argument("--from-logs", metavar="LOGDIR", help="a directory of *.jsonl usage logs, merged by time")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="where report.html, metrics.json and "
                   "events.jsonl go")
    p.add_argument("--title", help="the report's title (default: from the logs' names)")
    p.set_defaults(func=run_report)


def read_log(path: Path) -> list[Event]:
    """Every event of one log, or `UsageError` naming `file:line` and the reason."""
    from reports.metrics import check_event

    try:
        with open(path, encoding="utf-8") as f:
            events = parse_lines(f, source=str(path))
    except EventFormatError as e:
        raise UsageError(str(e)) from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read ({e.strerror})") from None
    for idx, ev in enumerate(events):
        reason = check_event(ev)
        if reason:
            # parse_lines skips blank lines, so count the failing event's line number again.
            raise UsageError(f"{path}:{_line_of(path, idx)}: {ev.kind}: {reason}")
    return events


def _line_of(path: Path, index: int) -> int:
    seen = -1
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                seen += 1
                if seen == index:
                    return n
    return 0


def collect(args: argparse.Namespace) -> tuple[list[Event], str]:
    """The events to report on, merged by time, and a default title."""
    if bool(args.events) == bool(args.from_logs):
        raise UsageError("report: give either EVENTS.jsonl or --from-logs LOGDIR (exactly one)")
    if args.events:
        path = Path(args.events)
        if not path.is_file():
            raise UsageError(f"{path}: no such event log")
        return read_log(path), path.name
    logdir = Path(args.from_logs)
    if not logdir.is_dir():
        raise UsageError(f"--from-logs: {logdir} is not a directory")
    files = sorted(p for p in logdir.glob("*.jsonl") if p.is_file())
    if not files:
        raise UsageError(f"--from-logs: {logdir} holds no *.jsonl files")
    events: list[Event] = []
    for f in files:
        events += read_log(f)
    events.sort(key=operator.attrgetter("t"))  # stable: ties keep file order, then line order
    return events, f"usage logs in {logdir}"


def run_report(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o: {out} exists and is not a directory")
    events, default_title = collect(args)
    if not events:
        raise UsageError("report: the log(s) hold no events")
    from reports.render import write_outputs

    metrics = write_outputs(events, out, title=args.title or f"daaas report: {default_title}")
    w = metrics["wait_s"]
    print(f"{metrics['requests']} requests, wait p50/p95/p99 {w['p50']}/{w['p95']}/{w['p99']} s, "
          f"{metrics['vm_hours']['total']} VM-hours ({metrics['vm_hours']['ready']} idle ready), "
          f"cost {metrics['cost']}, {metrics['reclaimed']} reclaimed, {metrics['failed_boots']} failed boots")
    print(f"report: {out / 'report.html'}", file=sys.stdout)
    return 0
