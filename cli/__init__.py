"""The `daaas` command line: one dispatcher, each area registers its own subcommands.

Each module in `AREAS` exposes `register(subparsers)`, adding its commands with
`set_defaults(func=...)`; `func(args)` returns the exit status. Bad input exits with status 2 and a
message naming the field or file and the reason.
"""
from __future__ import annotations

import argparse
import importlib
import sys

AREAS = ("cli.twin", "cli.live", "cli.dms", "cli.pki", "cli.report", "cli.demo")


class UsageError(Exception):
    """Bad input from the user: printed as `daaas: <message>` and exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="daaas", description="Data Analysis as a Service")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # an area not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"daaas: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
