"""`proxyd restore --state-dir DIR --in FILE`: verify a backup completely, then write it back.

Only while proxyd is stopped (seed 003: restore while the proxy is off). Nothing is written
unless the whole archive decrypts and verifies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from proxyd.admin import fetch_status
from proxyd.backup import BackupError, decrypt, restore_into
from proxyd.commands import state_dir_arg
from proxyd.commands.backup import add_passphrase_args, read_passphrase
from proxyd.statedir import StateDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("restore", help="restore a backup into a stopped proxy's state dir")
    state_dir_arg(p)
    p.add_argument("--in", dest="archive", type=Path, required=True, help="archive file to restore")
    p.add_argument("--into-this-proxy", action="store_true",
                   help="allow restoring a backup that was made of another proxy")
    add_passphrase_args(p)
    p.set_defaults(func=run)


def _running(state: StateDir) -> bool:
    try:
        fetch_status(state.control_socket, timeout=2)
    except OSError:
        return False
    return True


def run(args: argparse.Namespace) -> int:
    state = StateDir(args.state_dir)
    if _running(state):
        print("restore refused: proxyd is running with this state dir; stop it first "
              "(a backup is restored only while the proxy is off)", file=sys.stderr)
        return 1
    try:
        blob = args.archive.read_bytes()
        archive = decrypt(blob, read_passphrase(args, confirm=False))
        current = state.load_last_good()
        written = restore_into(state, archive, expect_proxy=current.proxy.name if current else None,
                               other_proxy_ok=args.into_this_proxy)
    except OSError as exc:
        print(f"restore failed: cannot read {args.archive}: {exc.strerror}", file=sys.stderr)
        return 1
    except BackupError as exc:
        print(f"restore failed, nothing changed: {exc}", file=sys.stderr)
        return 1
    print(f"restored proxy {archive.proxy!r} into {state.root}: {', '.join(written)}")
    return 0
