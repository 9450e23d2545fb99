"""`proxyd run`: standalone with `--config FILE`, managed (agent) with only `--state-dir`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxyd import logs
from proxyd.cli import state_dir_arg
from proxyd.config import ConfigError, load_file
from proxyd.daemon import Daemon, file_source
from proxyd.loop import run as run_loop
from proxyd.statedir import StateDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the proxy (standalone with --config, else managed)")
    p.add_argument("--config", type=Path, help="standalone mode: a ProxyConfig JSON file")
    state_dir_arg(p)
    p.add_argument("--admin", default="127.0.0.1:9180",
                   help="loopback address:port for /status and /metrics ('off' to disable; port 0 picks one)")
    p.add_argument("--log-format", choices=("text", "json"), default="text")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="seconds established connections get to finish on SIGTERM")
    p.set_defaults(func=run)


def parse_admin(value: str) -> tuple[str, int] | None:
    if value == "off":
        return None
    host, _, port = value.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def run(args: argparse.Namespace) -> int:
    state = StateDir(args.state_dir).ensure()
    logs.setup(args.log_format, args.log_level, state.logs)
    if args.config is not None:
        try:
            load_file(args.config)
        except ConfigError as exc:
            if state.load_last_good() is None:
                for problem in exc.problems:
                    print(problem, file=sys.stderr)
                return 1
        source = file_source(args.config)
    else:
        from proxyd.agent import manager_source  # managed mode lives in the agent package

        source = manager_source()
    daemon = Daemon(state, admin_tcp=parse_admin(args.admin), drain_timeout=args.drain_timeout)
    run_loop(daemon.serve(source))
    return 0
