"""`pforte-manager`: Django's management commands, plus `serve` (uvicorn on the ASGI app)."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "manager.settings")
    if argv[:1] == ["serve"]:
        import argparse

        import uvicorn

        ap = argparse.ArgumentParser(prog="pforte-manager serve")
        ap.add_argument("--host", default="127.0.0.1")
        ap.add_argument("--port", type=int, default=8000)
        args = ap.parse_args(argv[1:])
        # long-polls are async views: one process serves many waiting proxies
        uvicorn.run("manager.asgi:application", host=args.host, port=args.port, log_level="info",
                    proxy_headers=False, lifespan="off")
        return 0
    from django.core.management import execute_from_command_line

    execute_from_command_line(["pforte-manager", *argv])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
