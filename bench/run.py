"""`make bench`: run every bench/bench_*.py (or those named on the command line) in turn.

Each module has `main() -> None` and prints its own table: pforte's figure, the reference
(nginx, kamailio, rtpengine, HAProxy) measured in the same run, and the ratio.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE.parent))
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    failed = 0
    for name in names:
        print(f"\n=== bench {name} ===", flush=True)
        try:
            importlib.import_module(f"bench.bench_{name}").main()
        except Exception:  # noqa: BLE001 - one failing bench must not hide the others
            traceback.print_exc()
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
