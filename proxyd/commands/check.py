"""`proxyd check --config FILE`: validate a config and print every problem with its field path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxyd.config import ConfigError, load_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a config file and list every problem")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_file(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.config}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{args.config}: ok (proxy {cfg.proxy.name!r}, revision {cfg.revision}, "
          f"{len(cfg.instances)} instance(s), {len(cfg.applications)} application(s))")
    return 0
