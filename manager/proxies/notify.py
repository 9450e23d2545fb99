"""Wakes long-polls waiting for a proxy's next revision (or a new action), without polling the database.

A waiting request parks on a future; `changed()` (called from any thread: sync views and
signals run in worker threads) resolves the futures of that proxy on their event loop. Revisions
published by another process reach `changed()` through the API's one revision watcher, which
checks the database every DB_RECHECK seconds for the whole process.
"""

from __future__ import annotations

import asyncio
import threading
import time

_lock = threading.Lock()
_latest: dict[int, int] = {}
_waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
_actions: dict[int, int] = {}
DB_RECHECK = 1.0  # one query per second per process picks up revisions made elsewhere


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def changed(proxy_id: int, revision: int) -> None:
    with _lock:
        if revision <= _latest.get(proxy_id, 0):
            return
        _latest[proxy_id] = revision
        waiters = _waiters.pop(proxy_id, set())
    for loop, fut in waiters:
        loop.call_soon_threadsafe(_wake, fut)


def waiting() -> int:
    """Long-polls parked in this process right now (for /metrics)."""
    with _lock:
        return sum(len(w) for w in _waiters.values())


def known(proxy_id: int) -> int | None:
    with _lock:
        return _latest.get(proxy_id)


async def wait_newer(proxy_id: int, than: int, timeout: float) -> bool:
    """Wait until a revision newer than `than` is known for the proxy, or an action is made for
    it; False on timeout."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    entry = (loop, fut)
    with _lock:
        if _latest.get(proxy_id, 0) > than:
            return True
        _waiters.setdefault(proxy_id, set()).add(entry)
    try:
        await asyncio.wait_for(fut, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        with _lock:
            waiting = _waiters.get(proxy_id)
            if waiting is not None:
                waiting.discard(entry)
                if not waiting:
                    del _waiters[proxy_id]


def action(proxy_id: int) -> None:
    """A new action (backup request, restored files) waits for the proxy: end its long-poll now."""
    with _lock:
        _actions[proxy_id] = _actions.get(proxy_id, 0) + 1
        waiters = _waiters.pop(proxy_id, set())
    for loop, fut in waiters:
        loop.call_soon_threadsafe(_wake, fut)


def actions_seen(proxy_id: int) -> int:
    with _lock:
        return _actions.get(proxy_id, 0)


def now() -> float:
    return time.monotonic()
