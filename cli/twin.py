"""`daaas twin run | compare`: replay scenarios through the digital twin."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    twin = sub.add_parser("twin", help="replay demand scenarios through the digital twin")
    tsub = twin.add_subparsers(dest="twin_command", metavar="COMMAND")

    run = tsub.add_parser("run", help="replay one scenario and write a report")
    run.add_argument("scenario", type=Path, help="scenario YAML file")
    run.add_argument("-o", "--out", type=Path, required=True, help="directory for report.html, metrics.json, "
                     "events.jsonl")
    run.add_argument("--seed", type=int, help="override the scenario's seed")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override a field, e.g. pools.mantid.min_ready=4 or policy.period=30s")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=cmd_run)

    cmp_ = tsub.add_parser("compare", help="run several policy settings on one scenario, side by side")
    cmp_.add_argument("scenario", type=Path)
    cmp_.add_argument("--set", dest="sets", action="append", default=[], required=True,
                      metavar="KEY=V1,V2", help="a field and the values to try (repeat for a grid)")
    cmp_.add_argument("--seed", type=int)
    cmp_.add_argument("-o", "--out", type=Path, help="also write compare.html and compare.json here")
    cmp_.set_defaults(func=cmd_compare)
    __import__("cli.twin_extra").twin_extra.register_into(tsub)  # sweep and calibrate (issue 3)
    twin.set_defaults(func=lambda args: (twin.print_help(), 2)[1])


def _load(path: Path, sets: list[str], seed: int | None):
    from twin.scenario import ScenarioError, load_scenario, parse_override

    try:
        overrides = [parse_override(s) for s in sets]
        return load_scenario(path, overrides=overrides, seed=seed)
    except ScenarioError as e:
        raise UsageError(str(e)) from None


def _progress_bar(total: float, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(total=round(total / 3600, 1), unit="sim-h", desc="simulating", disable=not enabled,
               file=sys.stderr, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} sim-h "
               "[{elapsed}<{remaining}]")

    def update(now: float) -> None:
        # update() (not refresh()) lets tqdm throttle redraws to its mininterval.
        bar.update(round(now / 3600, 1) - bar.n)
    return bar, update


def headline(metrics: dict) -> str:
    w = metrics.get("wait_s") or {}
    vh = metrics.get("vm_hours") or {}

    def f(x, fmt="{:.1f}"):
        return "n/a" if x is None else fmt.format(x)
    lines = [
        f"requests {metrics.get('requests', 0)}   wait p50 {f(w.get('p50'))} s   p95 {f(w.get('p95'))} s   "
        f"p99 {f(w.get('p99'))} s   max {f(w.get('max'))} s",
        "VM-hours " + "   ".join(f"{k} {f(vh.get(k))}" for k in ("booting", "ready", "allocated", "abandoned",
                                                                  "total")),
        f"cost {f(metrics.get('cost'), '{:.2f}')}   reclaimed {metrics.get('reclaimed', 0)}   "
        f"failed boots {metrics.get('failed_boots', 0)}",
    ]
    per_cloud = metrics.get("per_cloud") or {}
    if per_cloud:
        lines.append("share " + "   ".join(f"{c} {100 * (v.get('share') or 0):.0f}%" for c, v in per_cloud.items()))
    return "\n".join(lines)


def cmd_run(args: argparse.Namespace) -> int:
    from twin.run import run_to_dir

    scenario = _load(args.scenario, args.sets, args.seed)
    bar, update = _progress_bar(scenario.duration_s, not args.no_progress)
    try:
        result = run_to_dir(scenario, args.out, progress=update)
    finally:
        bar.close()
    print(headline(result.metrics))
    print(f"report: {args.out / 'report.html'}")
    return 0


def _split_values(text: str) -> tuple[str, list]:
    from twin.scenario import ScenarioError, parse_override

    key, _ = (text.split("=", 1) + [""])[:2] if "=" in text else (text, "")
    if "=" not in text or not key.strip():
        raise UsageError(f"--set {text!r}: expected KEY=V1,V2,...")
    values = []
    for part in text.split("=", 1)[1].split(","):
        try:
            values.append(parse_override(f"{key}={part}")[1])
        except ScenarioError as e:
            raise UsageError(str(e)) from None
    return key.strip(), values


def cmd_compare(args: argparse.Namespace) -> int:
    from reports.compare import compare_table
    from twin.run import compare
    from twin.scenario import ScenarioError

    settings = [_split_values(s) for s in args.sets]
    try:
        rows = compare(args.scenario, settings, seed=args.seed,
                       on_done=lambda label, m: print(f"done: {label}", file=sys.stderr))
    except ScenarioError as e:
        raise UsageError(str(e)) from None
    print(compare_table(rows))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.json").write_text(json.dumps(dict(rows), indent=2, sort_keys=True))
        try:
            from reports.compare import compare_html
            (args.out / "compare.html").write_text(compare_html(rows))
        except ImportError:
            pass
    return 0
