"""`proxyd install`: write a hardened systemd unit that runs `proxyd run --state-dir DIR`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from proxyd.agent import state as agent_state
from proxyd.agent import unit
from proxyd.commands import state_dir_arg
from proxyd.statedir import StateDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("install", help="install proxyd as a systemd service for this state dir")
    state_dir_arg(p)
    p.add_argument("--unit-dir", type=Path, default=unit.DEFAULT_UNIT_DIR, help="where to write the unit")
    p.add_argument("--unit-name", default=unit.DEFAULT_UNIT_NAME)
    p.add_argument("--user", help="run as this user instead of root (needs the state dir to be theirs)")
    p.add_argument("--net-admin", action="store_true",
                   help="grant CAP_NET_ADMIN (network mode manual; also on when the last config uses it)")
    p.add_argument("--systemctl", action="store_true", help="also run systemctl daemon-reload and enable --now")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    state = StateDir(args.state_dir.resolve())
    agent = agent_state.load(state)
    if agent is None:
        print(f"warning: {state.root} is not registered yet; run `proxyd register` before starting the service",
              file=sys.stderr)
    last = state.load_last_good()
    net_admin = args.net_admin or (last is not None and last.network.mode == "manual")
    text = unit.render(unit.UnitSpec(
        state_dir=state.root, proxyd=unit.proxyd_command(), net_admin=net_admin,
        user=args.user, manager_url=agent.manager_url if agent else None,
    ))
    path = args.unit_dir / args.unit_name
    try:
        args.unit_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        print(f"cannot write {path}: {exc.strerror or exc} (run as root, or pass --unit-dir)", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    if args.systemctl:
        return systemctl(["daemon-reload"], ["enable", "--now", args.unit_name])
    print(f"start it with: systemctl daemon-reload && systemctl enable --now {args.unit_name}")
    return 0


def systemctl(*commands: list[str]) -> int:
    for cmd in commands:
        try:
            done = subprocess.run(["systemctl", *cmd], check=False)
        except FileNotFoundError:
            print("systemctl not found: this system does not run systemd", file=sys.stderr)
            return 1
        if done.returncode != 0:
            return done.returncode
    return 0
