"""`proxyd` command line. Each subcommand is a module in `proxyd.commands` exposing
`register(subparsers)` (adds its parser and sets `func`), so a new command is a new module."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from proxyd import __version__, commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proxyd", description="pforte edge proxy daemon")
    parser.add_argument("--version", action="version", version=f"proxyd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"proxyd.commands.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
