"""The local admin endpoint: `/status` (JSON), `/metrics` (Prometheus text), and `/healthz` and
`/readyz` for load balancers and probes.

Served on the control socket in the state dir (what `proxyd status` reads) and, optionally, on a
loopback TCP port for a Prometheus scraper. It answers GET and HEAD, one request per connection.

`/healthz` is liveness: it is answered by the event loop, so an answer means the loop turns.
`/readyz` is readiness: 200 once a configuration is applied and every service it asks for runs;
otherwise (and while draining on SIGTERM) 503 with the reasons, so a balancer takes the proxy out
before it stops accepting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxyd import metrics

log = logging.getLogger("proxyd.admin")

MAX_REQUEST = 4096  # a GET line and a few headers; anything longer is not ours


class AdminServer:
    def __init__(self, status: Callable[[], dict[str, Any]],
                 readiness: Callable[[], dict[str, Any]] = lambda: {"ready": True}):
        self.status = status
        self.readiness = readiness  # {"ready": bool, "reasons": [...] when not, ...}
        self.metrics = metrics.registry(status)
        self.servers: list[asyncio.Server] = []

    async def start(self, socket_path: Path, tcp: tuple[str, int] | None) -> None:
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        srv = await asyncio.start_unix_server(self._handle, path=str(socket_path))
        os.chmod(socket_path, 0o600)
        self.servers.append(srv)
        if tcp is not None:
            try:
                self.servers.append(await asyncio.start_server(self._handle, tcp[0], tcp[1]))
            except OSError as exc:
                # Metrics are optional; the proxy itself must still come up.
                log.error("event=admin_bind_failed address=%s:%d error=%s", tcp[0], tcp[1], exc)
            else:
                log.info("event=admin_listening address=%s:%d", tcp[0], self.tcp_port or tcp[1])

    @property
    def tcp_port(self) -> int | None:
        for srv in self.servers:
            for sock in srv.sockets:
                if sock.family.name in ("AF_INET", "AF_INET6"):
                    return int(sock.getsockname()[1])
        return None

    async def close(self) -> None:
        for srv in self.servers:
            srv.close()
        for srv in self.servers:
            await srv.wait_closed()
        self.servers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        parts = head[:MAX_REQUEST].split(b" ", 2)
        method = parts[0] if len(parts) > 2 else b""
        # a prober may add a query string (cache busting); the path alone selects the answer
        path = parts[1].decode("latin-1").partition("?")[0] if method in (b"GET", b"HEAD") else ""
        body, ctype, code = self._answer(path)
        writer.write(
            f"HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode() + (body if method != b"HEAD" else b"")
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


    def _answer(self, path: str) -> tuple[bytes, str, str]:
        if path == "/status":
            return json.dumps(self.status(), indent=2).encode(), "application/json", "200 OK"
        if path == "/metrics":
            return metrics.render(self.metrics), metrics.CONTENT_TYPE, "200 OK"
        if path == "/healthz":
            return b'{"status": "alive"}\n', "application/json", "200 OK"
        if path == "/readyz":
            ready = self.readiness()
            code = "200 OK" if ready["ready"] else "503 Service Unavailable"
            return json.dumps(ready).encode() + b"\n", "application/json", code
        return b"not found\n", "text/plain", "404 Not Found"


def fetch_status(socket_path: Path, path: str = "/status", timeout: float = 5.0) -> tuple[int, bytes]:
    """Blocking client for the control socket (used by `proxyd status` and tests)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(socket_path))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: proxyd\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
