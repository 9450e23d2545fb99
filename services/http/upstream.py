"""Keep-alive connections to backends: one protocol object per socket, pooled per (scheme, host, port, verify).

An `UpstreamConnection` belongs to at most one client connection at a time (its `owner`); it hands
every byte and event to that owner, which does the HTTP framing. A pooled (idle) connection that
receives anything or is closed by the backend leaves the pool at once, so `take()` never hands out
a dead socket it already knows about. The pool is sized above the client concurrency a listener
sees under load: a smaller pool churns backend connects for every request.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections import Counter
from time import perf_counter
from typing import Any, Protocol

from proxyd.service import LATENCY_BUCKETS, Histogram
from services.http.routes import Backend

CONNECT_TIMEOUT = 5.0  # a backend that does not accept within 5 s is down for this request
MAX_IDLE_PER_BACKEND = 1024  # idle sockets cost little; fewer than the client concurrency churns connects


class Owner(Protocol):
    """What an upstream connection reports to the client connection using it."""

    def upstream_data(self, data: bytes) -> None: ...
    def upstream_eof(self) -> None: ...
    def upstream_lost(self) -> None: ...
    def upstream_pause(self) -> None: ...
    def upstream_resume(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "key", "transport", "owner", "reused", "closed")

    def __init__(self, pool: Pools, key: tuple) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.owner: Owner | None = None
        self.reused = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.upstream_data(data)
        else:  # an idle backend connection must stay silent; anything else makes it unusable
            self.close()

    def eof_received(self) -> bool | None:
        owner = self.owner
        if owner is not None:
            owner.upstream_eof()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.upstream_lost()

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_pause()

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_resume()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0): a backend must not mistake a request body the client
        abandoned for a complete one, as it could when it sees an orderly FIN after the last byte."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.owner = None
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()

    def close(self) -> None:
        self.owner = None
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()


class Pools:
    """Backend connections: the idle ones per backend, and the in-flight count with its queue.

    A backend has at most `per_backend` exchanges in flight (each holds one backend connection);
    up to `queue` more wait in arrival order for a slot, and beyond that requests get 503 with
    Retry-After instead of piling connections onto a backend that is already slow, so one slow
    backend or one greedy client cannot take every descriptor. A freed slot passes straight to the
    oldest waiter (`hand_over`), so a newcomer never overtakes the queue.
    """

    def __init__(self, per_backend: int = 1024, queue: int = 256) -> None:
        self.per_backend, self.queue = per_backend, queue
        self.idle: dict[tuple, list[UpstreamConnection]] = {}
        self.inflight: Counter[tuple] = Counter()  # backend key -> exchanges holding a connection to it
        # backend key -> the exchanges waiting for a slot, oldest first (a dict: O(1) removal of one that gives up)
        self.waiting: dict[tuple, dict[Any, None]] = {}
        self.saturated = 0  # requests refused because their backend's queue was full (or timed out in it)
        self.queued = 0  # requests that had to wait for a slot
        self.connects = 0
        self.connect_errors = 0
        self.connect_seconds = Histogram(LATENCY_BUCKETS)  # TCP (+ TLS) connects that succeeded
        self._verify = ssl.create_default_context()
        self._noverify = ssl.create_default_context()
        self._noverify.check_hostname = False
        self._noverify.verify_mode = ssl.CERT_NONE

    def acquire(self, key: tuple, waiter: Any) -> str:
        """`"slot"`: the caller holds one of the backend's slots now; `"queued"`: it waits, and the
        slot comes with `hand_over`; `"full"`: neither (answer 503)."""
        if self.inflight[key] < self.per_backend:
            self.inflight[key] += 1
            return "slot"
        q = self.waiting.setdefault(key, {})
        if len(q) >= self.queue:
            self.saturated += 1
            return "full"
        q[waiter] = None
        self.queued += 1
        return "queued"

    def leave_queue(self, key: tuple, waiter: Any) -> None:
        q = self.waiting.get(key)
        if q is not None:
            q.pop(waiter, None)
            if not q:
                del self.waiting[key]

    def hand_over(self, key: tuple) -> Any:
        """A slot of `key` is free: the oldest waiter, which now holds it, or None (the slot is released)."""
        q = self.waiting.get(key)
        if q:
            waiter = next(iter(q))
            del q[waiter]
            if not q:
                del self.waiting[key]
            return waiter
        self.inflight[key] -= 1
        return None

    @property
    def waiting_count(self) -> int:
        return sum(len(q) for q in self.waiting.values())

    def take(self, b: Backend) -> UpstreamConnection | None:
        idle = self.idle.get(b.key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                conn.reused = True
                return conn
        return None

    async def connect(self, b: Backend) -> UpstreamConnection:
        ctx = None
        if b.scheme == "https":
            ctx = self._verify if b.verify else self._noverify
        self.connects += 1
        loop = asyncio.get_running_loop()
        started = perf_counter()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self, b.key), b.host, b.port, ssl=ctx,
                                       server_hostname=b.host if ctx else None),
                CONNECT_TIMEOUT,
            )
        except BaseException:
            self.connect_errors += 1
            raise
        self.connect_seconds.observe(perf_counter() - started)
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        conn.owner = None
        idle = self.idle.setdefault(conn.key, [])
        if conn.closed or len(idle) >= MAX_IDLE_PER_BACKEND:
            conn.close()
        else:
            idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def close(self) -> None:
        for conns in list(self.idle.values()):
            for c in list(conns):
                c.close()
        self.idle.clear()

    @property
    def idle_count(self) -> int:
        return sum(len(v) for v in self.idle.values())
