"""Wakes long-polls waiting for a proxy's next revision (or a new action), without polling the database.

Revisions published in this process wake their waiters at once; a database check every
DB_RECHECK seconds also catches revisions published by another process.
"""

from __future__ import annotations

import threading
import time

_lock = threading.Lock()
_latest: dict[int, int] = {}
_actions: dict[int, int] = {}
DB_RECHECK = 1.0  # one query per second per process picks up revisions made elsewhere


def changed(proxy_id: int, revision: int) -> None:
    with _lock:
        _latest[proxy_id] = max(revision, _latest.get(proxy_id, 0))


def known(proxy_id: int) -> int | None:
    with _lock:
        return _latest.get(proxy_id)


def action(proxy_id: int) -> None:
    """A new action (backup request, restored files) waits for the proxy: end its long-poll now."""
    with _lock:
        _actions[proxy_id] = _actions.get(proxy_id, 0) + 1


def actions_seen(proxy_id: int) -> int:
    with _lock:
        return _actions.get(proxy_id, 0)


def now() -> float:
    return time.monotonic()
