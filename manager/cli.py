"""`pforte-manager`: Django's management commands, plus `serve` (uvicorn on the ASGI app)."""

from __future__ import annotations

import logging
import os
import sys

STOP_GRACE = 3  # seconds a stopping manager lets answers in progress finish
# an agent's heartbeat connection is idle for its 60 s interval: with uvicorn's default of 5 s
# every heartbeat found it closed, and one sent as the server closed it failed (a reset, or no
# answer) - 154 of 10,264 at 3,000 proxies; its socket is in the fd budget either way
KEEP_ALIVE = 75

def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "manager.settings")
    if argv[:1] == ["serve"]:
        import argparse

        import uvicorn

        ap = argparse.ArgumentParser(prog="pforte-manager serve")
        ap.add_argument("--host", default="127.0.0.1")
        ap.add_argument("--port", type=int, default=8000)
        ap.add_argument("--workers", type=int, default=1,
                        help="manager processes on the one port (PostgreSQL only: they share changes through "
                             "LISTEN/NOTIFY; SQLite is one process)")
        ap.add_argument("--log-format", choices=("text", "json"), default=os.environ.get("PFORTE_LOG_FORMAT", "text"))
        args = ap.parse_args(argv[1:])
        if args.workers < 1:
            ap.error("--workers: at least 1")
        if args.workers > 1 and not os.environ.get("DATABASE_URL", "").startswith(("postgres:", "postgresql:")):
            ap.error("--workers above 1 needs PostgreSQL (DATABASE_URL=postgres://…): on SQLite the manager "
                     "is one process")
        os.environ["PFORTE_LOG_FORMAT"] = args.log_format
        host = f"[{args.host}]" if ":" in args.host else args.host
        # without a configured public URL the manager is where it listens (right on loopback, as `make run`)
        if "PFORTE_PUBLIC_URL" not in os.environ:
            os.environ["PFORTE_PUBLIC_URL"] = f"http://{host}:{args.port}"
            if args.host in ("0.0.0.0", "::"):
                print("pforte-manager: listening on every address without PFORTE_PUBLIC_URL: set it to the URL "
                      "proxies and browsers use (registration URLs are built from it; other Host names are "
                      "refused)", file=sys.stderr)
        # agents' polls and heartbeats are served by an async front (agent_front.py): one process
        # serves thousands of waiting proxies; --workers adds processes on the same socket
        # log_config=None: uvicorn's loggers get no handlers of their own and propagate to the root
        # handler Django's LOGGING sets up, so access lines share the manager's format
        # lifespan: at shutdown the front writes the heartbeats it answered and not written yet; the
        # parked long-polls are cut after STOP_GRACE (they would hold the stop for up to a minute)
        logging.basicConfig(level=logging.INFO, handlers=[_stderr_handler(args.log_format)])
        from manager import sdready

        sdready.start(args.host, args.port)  # READY=1 / WATCHDOG=1 under a Type=notify unit
        uvicorn.run("manager.asgi:application", host=args.host, port=args.port, log_level="info",
                    proxy_headers=False, lifespan="on", workers=args.workers, log_config=None,
                    timeout_graceful_shutdown=STOP_GRACE, timeout_keep_alive=KEEP_ALIVE)
        return 0
    from django.core.management import execute_from_command_line

    execute_from_command_line(["pforte-manager", *argv])
    return 0


def _stderr_handler(fmt: str) -> logging.Handler:
    from proxyd.logs import stream_formatter

    handler = logging.StreamHandler()
    handler.setFormatter(stream_formatter(fmt))
    return handler


if __name__ == "__main__":
    raise SystemExit(main())
