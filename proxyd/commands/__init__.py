"""One module per `proxyd` subcommand; each defines `register(subparsers)`. The arguments that
several commands share live here, below the commands, so that no command imports `proxyd.cli`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_STATE_DIR = os.environ.get("PROXYD_STATE_DIR", "/var/lib/pforte")


def state_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR),
        help="state directory (certs, last good config, logs, control socket); "
        f"default {DEFAULT_STATE_DIR}, env PROXYD_STATE_DIR",
    )
