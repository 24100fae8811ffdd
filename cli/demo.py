"""`daaas demo`: the main job on embedded defaults: replay a facility week and report."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="replay scenarios/facility-week.yaml through the twin and report")
    demo.add_argument("-o", "--out", type=Path, default=Path("out/facility-week"))
    demo.add_argument("--no-progress", action="store_true")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from cli.twin import cmd_run
    from twin.run import DEFAULT_SCENARIO

    print(f"daaas demo: replaying {DEFAULT_SCENARIO.name} through the digital twin")
    ns = argparse.Namespace(scenario=DEFAULT_SCENARIO, out=args.out, seed=None, sets=[],
                            no_progress=args.no_progress)
    return cmd_run(ns)
