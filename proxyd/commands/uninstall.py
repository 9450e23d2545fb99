"""`proxyd uninstall`: remove the systemd unit written by `proxyd install` (the state dir stays)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxyd.agent import unit
from proxyd.commands.install import systemctl


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("uninstall", help="remove the systemd unit (keeps the state dir)")
    p.add_argument("--unit-dir", type=Path, default=unit.DEFAULT_UNIT_DIR)
    p.add_argument("--unit-name", default=unit.DEFAULT_UNIT_NAME)
    p.add_argument("--systemctl", action="store_true", help="first run systemctl disable --now")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = args.unit_dir / args.unit_name
    if not path.exists():
        print(f"{path} does not exist: nothing to uninstall", file=sys.stderr)
        return 1
    if "proxyd" not in path.read_text():
        print(f"{path} was not written by `proxyd install`; leaving it alone", file=sys.stderr)
        return 1
    if args.systemctl:
        rc = systemctl(["disable", "--now", args.unit_name])
        if rc != 0:
            return rc
    try:
        path.unlink()
    except OSError as exc:
        print(f"cannot remove {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"removed {path}" + ("" if args.systemctl else "; run systemctl daemon-reload"))
    return 0
