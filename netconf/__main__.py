"""`python -m netconf apply|show|teardown [--netns NAME]`: desired state as JSON on stdin
({"interface", "address", "gateway", "table"}), the result as JSON on stdout; exit 1 on error."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from netconf import kernel
from netconf.plan import Desired, NetconfError, plan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netconf")
    ap.add_argument("action", choices=("apply", "show", "plan", "teardown"))
    ap.add_argument("--netns", help="operate inside this network namespace")
    args = ap.parse_args(argv)
    try:
        raw = json.load(sys.stdin)
        d = Desired(raw["interface"], raw["address"], raw["gateway"], int(raw["table"]))
        with kernel.connect(args.netns) as ipr:
            if args.action == "show":
                out: dict = {"observed": asdict(kernel.observe(ipr, d))}
            elif args.action == "plan":
                out = {"plan": [o.kind for o in plan(d, kernel.observe(ipr, d))]}
            elif args.action == "apply":
                out = {"applied": kernel.apply(ipr, d, plan(d, kernel.observe(ipr, d)))}
            else:
                out = {"removed": kernel.teardown(ipr, d)}
    except (NetconfError, KeyError, ValueError, json.JSONDecodeError) as exc:
        json.dump({"error": str(exc)}, sys.stdout)
        return 1
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
