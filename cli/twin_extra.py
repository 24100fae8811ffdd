"""`daaas twin sweep | calibrate`: policy sweeps on Dask and scenarios calibrated from event logs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli import UsageError


def register_into(tsub: argparse._SubParsersAction) -> None:
    """Add the commands under `daaas twin` (called by cli.twin.register)."""
    sw = tsub.add_parser("sweep", help="run every combination of policy settings over seeds on Dask")
    sw.add_argument("scenario", type=Path, help="scenario YAML file")
    sw.add_argument("--grid", type=Path, required=True, help="grid YAML: grid, seeds, target_p95, oracle")
    sw.add_argument("-o", "--out", type=Path, required=True, help="directory for report.html, sweep.json, "
                    "recommended.yaml, pareto.png")
    sw.add_argument("--scheduler", help="address of an existing Dask scheduler (default: a LocalCluster)")
    sw.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    sw.add_argument("--no-progress", action="store_true", help="no progress bar")
    sw.set_defaults(func=cmd_sweep)

    cal = tsub.add_parser("calibrate", help="fit a scenario to an event log (events.jsonl)")
    cal.add_argument("events", type=Path, help="event log, one JSON event a line")
    cal.add_argument("-o", "--out", type=Path, required=True, help="scenario YAML to write")
    cal.add_argument("--name", help="the scenario's name")
    cal.set_defaults(func=cmd_calibrate)


def cmd_sweep(args: argparse.Namespace) -> int:
    from twin.scenario import ScenarioError
    from twin.sweep import load_grid, run_sweep, write_report

    if args.workers < 1:
        raise UsageError(f"--workers: must be at least 1, got {args.workers}")
    try:
        grid = load_grid(args.grid)
        points = run_sweep(args.scenario, grid, scheduler=args.scheduler, n_workers=args.workers,
                           progress=not args.no_progress)
    except ScenarioError as e:
        raise UsageError(str(e)) from None
    best = write_report(points, args.out, scenario=args.scenario, grid=grid)
    oracle = next((p for p in points if p.kind == "oracle"), None)
    for p in points:
        ratio = f"{p.vm_hours / oracle.vm_hours:.2f}x oracle" if oracle and oracle.vm_hours else ""
        mark = "*" if p is best else ("P" if p.pareto else " ")
        print(f"{mark} {p.kind:10s} p95 {p.p95_wait_s:7.1f} s  VM-h {p.vm_hours:8.1f}  idle {p.idle_vm_hours:7.1f}  "
              f"cost {p.cost:8.2f}  {ratio:14s} {p.label}")
    if best is not None:
        print(f"recommended: {best.label}\nYAML to paste: {args.out / 'recommended.yaml'}")
    print(f"report: {args.out / 'report.html'}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import yaml

    from twin.calibrate import CalibrationError, calibrate, read_events
    from twin.scenario import ScenarioError, validate

    try:
        events = read_events(args.events)
        raw = calibrate(events, source=str(args.events), name=args.name)
        validate(raw, source=str(args.out))  # what we write must load
    except (CalibrationError, ScenarioError) as e:
        raise UsageError(str(e)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = f"# Calibrated by daaas twin calibrate from {args.events}\n" + yaml.safe_dump(raw, sort_keys=False)
    args.out.write_text(text)
    print(f"scenario: {args.out}", file=sys.stderr)
    return 0
