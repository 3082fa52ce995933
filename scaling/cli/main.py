"""Entry point of `scaling`: dispatches to the command modules; a user error is one line."""

from __future__ import annotations

import argparse
import importlib
import sys

from scaling import __version__
from scaling.errors import ScalingError

# Each module defines `register(subparsers)`, adding its commands with `set_defaults(func=...)`.
COMMAND_MODULES: tuple[str, ...] = (
    "scaling.cli.data",
    "scaling.cli.sweep",
    "scaling.cli.count",
    "scaling.cli.train",
    "scaling.cli.report",
    "scaling.cli.fit",
    "scaling.cli.coordcheck",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaling", description="Empirical scaling-law research toolkit."
    )
    parser.add_argument("--version", action="version", version=f"scaling {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ScalingError as e:
        print(f"scaling {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scaling {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
