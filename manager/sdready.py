"""Readiness and liveness for systemd when `pforte-manager serve` runs under a `Type=notify` unit.

uvicorn has no hook for "listening, and the database answers"; so a thread asks the manager's
own `/readyz` over loopback, as a load balancer would, and sends `READY=1` once it answers 200 —
`STATUS=` carries the reason while it does not, so `systemctl status` says why the start waits.
With `WatchdogSec=` it then sends `WATCHDOG=1` every half interval while `/healthz` answers: an
event loop that stops serving stops the pings and systemd restarts the process. Outside systemd
($NOTIFY_SOCKET unset) nothing starts.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request

from proxyd.sdnotify import notify, watchdog_interval

POLL = 0.5  # /readyz is asked after this, then twice as long each time up to POLL_MAX, until ready
POLL_MAX = 5.0  # a database down at boot costs one 503 log line per 5 s, not two a second
TIMEOUT = 5.0  # one answer of the manager's own health views takes longer only when it is stuck


def start(host: str, port: int) -> threading.Thread | None:
    """Follow the manager listening at host:port (a wildcard address is asked on loopback)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return None
    loopback = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    t = threading.Thread(target=follow, args=(f"http://{loopback}:{port}", watchdog_interval()),
                         name="sd-notify", daemon=True)
    t.start()
    return t


def ask(url: str) -> tuple[int, str]:
    """(status, reason) of one health view; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as r:  # noqa: S310 - our own loopback URL
            return r.status, ""
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read(4096) or b"{}").get("reason", "")
        except ValueError:
            reason = ""
        return exc.code, str(reason) or f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return 0, f"not answering ({type(exc).__name__})"


def follow(base: str, watchdog: float | None) -> None:
    last, wait = None, POLL
    while True:
        status, reason = ask(base + "/readyz")
        if status == 200:
            break
        if reason != last:
            notify(f"STATUS=not ready: {reason}"[:200])
            last = reason
        time.sleep(wait)
        wait = min(wait * 2, POLL_MAX)
    notify("READY=1", "STATUS=ready")
    if watchdog is None:
        return
    while True:
        if ask(base + "/healthz")[0] == 200:
            notify("WATCHDOG=1")
        time.sleep(watchdog)
