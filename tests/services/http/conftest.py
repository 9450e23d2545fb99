"""A real backend instance on loopback: echoes what it received, streams, sets cookies, WebSocket echo."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        size = 0
        if self.headers.get("Transfer-Encoding") == "chunked":
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    self.rfile.readline()
                    break
                while n:
                    size += len(self.rfile.read(min(n, 65536)) or b"")
                    n = n - min(n, 65536)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                got = len(self.rfile.read(min(left, 1 << 20)))
                size += got
                left -= got
        if self.path.endswith("/big"):
            total = 100 * 2**20
            self.send_response(200)
            self.send_header("Content-Length", str(total))
            self.end_headers()
            block = b"x" * 2**20
            for _ in range(100):
                self.wfile.write(block)
            return
        body = json.dumps({"method": self.command, "path": self.path, "body_bytes": size,
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "sid=1; Path=/app; HttpOnly")
        self.send_header("Set-Cookie", "lang=de")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def ws_backend() -> Iterator[str]:
    import websockets.asyncio.server as wss

    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict = {}

    async def echo(ws) -> None:  # type: ignore[no-untyped-def]
        async for msg in ws:
            await ws.send(f"echo:{msg}:{ws.request.path}")

    async def main() -> None:
        holder["server"] = await wss.serve(echo, "127.0.0.1", 0)
        holder["port"] = holder["server"].sockets[0].getsockname()[1]
        ready.set()
        await holder["server"].wait_closed()

    t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    t.start()
    ready.wait(10)
    yield f"http://127.0.0.1:{holder['port']}"
    loop.call_soon_threadsafe(holder["server"].close)
    t.join(10)
    loop.close()
