"""`proxyd backup --state-dir DIR --out FILE`: an encrypted archive of settings, keys, certificates."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from proxyd.backup import BackupError, collect, encrypt, proxy_name_of
from proxyd.commands import state_dir_arg
from proxyd.statedir import StateDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="write an encrypted backup of this proxy's settings, keys and certificates")
    state_dir_arg(p)
    p.add_argument("--out", type=Path, required=True, help="archive file to write")
    add_passphrase_args(p)
    p.set_defaults(func=run)


def add_passphrase_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--passphrase-file", type=Path,
                   help="read the passphrase from this file (first line) instead of asking; '-' for stdin")


def read_passphrase(args: argparse.Namespace, *, confirm: bool) -> str:
    src = args.passphrase_file
    if src is not None:
        text = sys.stdin.readline() if str(src) == "-" else src.read_text().splitlines()[0]
        return text.rstrip("\r\n")
    first = getpass.getpass("Backup passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise BackupError("the passphrases differ")
    return first


def run(args: argparse.Namespace) -> int:
    state = StateDir(args.state_dir)
    try:
        archive = collect(state, proxy_name_of(state))
        blob = encrypt(archive, read_passphrase(args, confirm=True))
    except BackupError as exc:
        print(f"backup failed: {exc}", file=sys.stderr)
        return 1
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    print(f"backup of proxy {archive.proxy!r} written to {args.out} ({len(blob)} bytes, {len(archive.files)} files)")
    return 0
