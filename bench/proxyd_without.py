"""proxyd without some services, for benchmarks that measure one service alone:
`python -m bench.proxyd_without media run --config ...` (everything after the names goes to proxyd)."""

from __future__ import annotations

import sys

import proxyd.daemon
from proxyd.cli import main
from proxyd.supervisor import discover


def _without(names: set[str]):  # type: ignore[no-untyped-def]
    return lambda: [c for c in discover() if c.name not in names]


if __name__ == "__main__":
    proxyd.daemon.discover = _without(set(sys.argv[1].split(",")))  # type: ignore[attr-defined]
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    raise SystemExit(main())
