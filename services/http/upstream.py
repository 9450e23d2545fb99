"""Keep-alive connection pools to backends, one per (scheme, host, port, verify).

A pooled connection is reused only after its previous response was read completely. A request
without a body that fails on a reused connection before any response byte arrived is retried
once on a fresh connection (the backend may have closed the idle connection meanwhile).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import defaultdict
from dataclasses import dataclass

from services.http.routes import Backend

CONNECT_TIMEOUT = 5.0  # a backend that does not accept within 5 s is down for this request
MAX_IDLE_PER_BACKEND = 256  # sized for wrk-style concurrency; idle sockets cost ~nothing


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False

    def close(self) -> None:
        self.writer.close()


class Pools:
    def __init__(self) -> None:
        self.idle: dict[tuple, list[Conn]] = defaultdict(list)
        self.connects = 0
        self.connect_errors = 0
        self._verify = ssl.create_default_context()
        self._noverify = ssl.create_default_context()
        self._noverify.check_hostname = False
        self._noverify.verify_mode = ssl.CERT_NONE

    async def acquire(self, b: Backend) -> Conn:
        idle = self.idle.get(b.key)
        while idle:
            conn = idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                conn.reused = True
                return conn
            conn.close()
        return await self.connect(b)

    async def connect(self, b: Backend) -> Conn:
        ctx = None
        if b.scheme == "https":
            ctx = self._verify if b.verify else self._noverify
        self.connects += 1
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(b.host, b.port, ssl=ctx, server_hostname=b.host if ctx else None,
                                        limit=2**16),
                CONNECT_TIMEOUT,
            )
        except BaseException:
            self.connect_errors += 1
            raise
        return Conn(reader, writer)

    def release(self, b: Backend, conn: Conn) -> None:
        idle = self.idle[b.key]
        if len(idle) < MAX_IDLE_PER_BACKEND and not conn.writer.is_closing():
            idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conns in self.idle.values():
            for c in conns:
                c.close()
        self.idle.clear()

    @property
    def idle_count(self) -> int:
        return sum(len(v) for v in self.idle.values())
