"""systemd's service notification protocol, without a library: one datagram to $NOTIFY_SOCKET.

Under a unit with `Type=notify` systemd waits for `READY=1` before it calls the service started,
shows `STATUS=` in `systemctl status`, and with `WatchdogSec=` restarts the service when
`WATCHDOG=1` stops arriving (systemd sets $WATCHDOG_USEC to that interval). Outside systemd the
variable is unset and every call here does nothing. See sd_notify(3).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger("proxyd.sdnotify")


def notify(*fields: str) -> bool:
    """Send `fields` (`READY=1`, `STATUS=...`) to systemd; False when not under systemd or it failed."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket name
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(fields).encode(), path)
    except OSError as exc:
        log.warning("event=sd_notify_failed socket=%r error=%s", path, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """How often to send WATCHDOG=1 (half the unit's WatchdogSec), or None when it is not asked for."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec), 1) / 2e6
    except ValueError:
        return None


async def watchdog(interval: float) -> None:
    """Ping from the event loop itself: a loop that stops turning stops the pings, and systemd
    restarts the service (liveness, as /healthz for a prober)."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
