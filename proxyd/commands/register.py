"""`proxyd register URL`: use a one-time registration URL from the manager and store the API key.

The URL is a secret until used, so it can also come from stdin (`-`) or a file (`--url-file`)
and never has to appear in the process list or shell history.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from proxyd import __version__
from proxyd.agent import client
from proxyd.agent import state as agent_state
from proxyd.commands import state_dir_arg
from proxyd.statedir import StateDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="register this proxy with the manager (one-time URL)")
    p.add_argument("url", nargs="?", help="registration URL, or '-' to read it from stdin")
    p.add_argument("--url-file", type=Path, help="read the registration URL from this file")
    state_dir_arg(p)
    p.add_argument("--hostname", default=socket.gethostname(), help="name reported to the manager")
    p.add_argument("--ca-file", type=Path, help="CA certificate(s) for a manager with a private CA")
    p.add_argument("--force", action="store_true", help="replace an existing registration in the state dir")
    p.set_defaults(func=run)


def read_url(args: argparse.Namespace) -> str | None:
    if args.url_file is not None:
        return args.url_file.read_text().strip()
    if args.url == "-":
        return sys.stdin.readline().strip()
    return args.url.strip() if args.url else None


def run(args: argparse.Namespace) -> int:
    state = StateDir(args.state_dir)
    existing = agent_state.load(state)
    if existing is not None and not args.force:
        print(f"{state.root} is already registered with {existing.manager_url} as proxy "
              f"{existing.proxy_name!r} (id {existing.proxy_id}); use --force to replace it", file=sys.stderr)
        return 1
    try:
        url = read_url(args)
    except OSError as exc:
        print(f"cannot read the registration URL: {exc}", file=sys.stderr)
        return 1
    if not url:
        print("no registration URL given (argument, '-' for stdin, or --url-file)", file=sys.stderr)
        return 1
    try:
        ca = str(args.ca_file.resolve()) if args.ca_file else None
        agent = client.register(url, args.hostname, __version__, ca_file=ca)
    except client.RegistrationError as exc:
        print(f"registration failed: {exc}", file=sys.stderr)
        return 1
    agent_state.save(state.ensure(), agent)
    print(f"registered as proxy {agent.proxy_name!r} (id {agent.proxy_id}) with {agent.manager_url}; "
          f"state in {state.root}. Start it with: proxyd run --state-dir {state.root}")
    return 0

