"""One client connection: read a request head, route it, stream it upstream, stream the answer back.

Bodies are streamed in both directions with backpressure (`drain()`), never buffered whole.
Every refusal is answered with its status and logged once; nothing unrouted reaches a backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from services.http.canonical import BadPath, split_target
from services.http.http1 import MAX_HEAD, ChunkedDecoder, Head, HttpError, parse_request_head, parse_response_head
from services.http.routes import AppTable, Forward, Redirect, Refuse, WebTable, scope_cookie
from services.http.upstream import Conn, Pools

log = logging.getLogger("services.http")

HEADER_TIMEOUT = 10.0  # slowloris: a head must arrive within 10 s of the first byte / connect
IDLE_TIMEOUT = 60.0  # keep-alive connections idle longer than this are closed
UPSTREAM_TIMEOUT = 60.0  # a backend must start answering within 60 s (504 otherwise)
MAX_BODY = 4 * 2**30  # 4 GiB request bodies at most (413 above)
READ_SIZE = 65536

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
    b"upgrade", b"proxy-authorization", b"proxy-authenticate",
})
# Clients must not be able to claim another origin: these are replaced, never passed on.
UNTRUSTED = frozenset({
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix",
    b"x-forwarded-port", b"forwarded", b"x-real-ip",
})
REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
           501: "Not Implemented", 502: "Bad Gateway", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
           301: "Moved Permanently", 302: "Found"}


@dataclass
class Stats:
    counters: Counter[str] = field(default_factory=Counter)
    active: int = 0


class ClientGone(Exception):
    pass


def simple_response(status: int, body: bytes = b"", extra: bytes = b"", close: bool = False) -> bytes:
    reason = REASONS.get(status, "Error")
    if not body and status >= 400:
        body = f"{status} {reason}\n".encode()
    conn = b"Connection: close\r\n" if close else b""
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n".encode() + extra + conn + b"\r\n" + body)


class Connection:
    """Serves requests on one accepted client connection until it closes or times out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 table: Callable[[], WebTable | AppTable], pools: Pools, stats: Stats, tls: bool):
        self.r, self.w = reader, writer
        self.table, self.pools, self.stats = table, pools, stats
        self.proto = b"https" if tls else b"http"
        peer = writer.get_extra_info("peername") or ("", 0)
        self.client_ip = str(peer[0])
        self.buf = bytearray()
        self.busy = False  # inside a request: draining waits for it

    async def serve(self) -> None:
        first = True
        try:
            while True:
                head = await self._read_head(HEADER_TIMEOUT if first else IDLE_TIMEOUT, first)
                if head is None:
                    return
                first = False
                self.busy = True
                keep = await self._one(head)
                self.busy = False
                if not keep:
                    return
        except (ConnectionError, ClientGone, asyncio.IncompleteReadError):
            pass
        finally:
            self.w.close()

    async def _read_head(self, timeout: float, first: bool) -> bytes | None:
        deadline = time.monotonic() + timeout
        started = bool(self.buf)
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buf[: end + 4])
                del self.buf[: end + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                line_end = self.buf.find(b"\r\n")
                status = 414 if line_end < 0 or line_end > 8192 else 431
                await self._refuse(status, "request head too large")
                return None
            remaining = deadline - time.monotonic()
            try:
                chunk = await asyncio.wait_for(self.r.read(READ_SIZE), max(remaining, 0))
            except TimeoutError:
                if started or first and self.buf:
                    await self._refuse(408, "request head not received in time")
                return None
            if not chunk:
                return None
            if not started:  # the head deadline runs from its first byte on keep-alive connections
                started = True
                deadline = time.monotonic() + HEADER_TIMEOUT
            self.buf += chunk

    async def _refuse(self, status: int, reason: str, *, close: bool = True) -> bool:
        self.stats.counters[f"refused_{status}"] += 1
        log.warning("event=request_refused status=%d reason=%r client=%s", status, reason, self.client_ip)
        with contextlib.suppress(ConnectionError):
            self.w.write(simple_response(status, close=close))
            await self.w.drain()
        return not close

    async def _one(self, raw_head: bytes) -> bool:
        """Handle one request; True to keep the connection for another."""
        self.stats.counters["requests"] += 1
        try:
            req = parse_request_head(raw_head)
            path, query = split_target(req.target)
        except HttpError as exc:
            return await self._refuse(exc.status, exc.reason)
        except BadPath as exc:
            return await self._refuse(400, f"non-canonical path: {exc}")
        if req.content_length is not None and req.content_length > MAX_BODY:
            return await self._refuse(413, "body too large")
        decision = self.table().route(path, query)
        if isinstance(decision, Refuse):
            await self._skip_body(req)
            return await self._refuse(decision.status, decision.reason, close=not req.keep_alive)
        if isinstance(decision, Redirect):
            await self._skip_body(req)
            self.stats.counters["redirects"] += 1
            loc = decision.location.encode("latin-1")
            self.w.write(simple_response(decision.status, b"", b"Location: " + loc + b"\r\n", close=not req.keep_alive))
            await self.w.drain()
            return req.keep_alive
        return await self._forward(req, decision)

    async def _skip_body(self, req: Head) -> None:
        """A refused request's body is not forwarded; small ones are consumed to keep framing."""
        if req.chunked or (req.content_length or 0) > 65536:
            req.keep_alive = False
        elif req.content_length:
            need = req.content_length - len(self.buf)
            if need > 0:
                await asyncio.wait_for(self.r.readexactly(need), HEADER_TIMEOUT)
            del self.buf[: req.content_length]

    def _upstream_head(self, req: Head, fwd: Forward) -> bytes:
        lines = [req.method + b" " + fwd.path.encode("latin-1") + b" HTTP/1.1"]
        host = req.get(b"host") or b""
        for k, v in req.headers:
            lk = k.lower()
            if lk in HOP_BY_HOP or lk in UNTRUSTED or lk == b"content-length":
                continue
            if lk == b"host":
                v = fwd.host.encode() if fwd.host else v
            lines.append(k + b": " + v)
        if req.upgrade is not None:
            lines.append(b"Connection: Upgrade")
            lines.append(b"Upgrade: " + req.upgrade)
        if req.chunked:
            lines.append(b"Transfer-Encoding: chunked")
        elif req.content_length is not None:
            lines.append(b"Content-Length: " + str(req.content_length).encode())
        lines.append(b"X-Forwarded-For: " + self.client_ip.encode())
        lines.append(b"X-Forwarded-Proto: " + self.proto)
        lines.append(b"X-Forwarded-Host: " + host)
        lines.append(b"X-Forwarded-Prefix: " + fwd.prefix.encode())
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _forward(self, req: Head, fwd: Forward) -> bool:
        head = self._upstream_head(req, fwd)
        bodyless = not req.chunked and not req.content_length
        for attempt in (1, 2):
            try:
                up = await self.pools.acquire(fwd.backend)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                return await self._upstream_failed(fwd, 502, f"connect failed: {exc!r}")
            try:
                up.writer.write(head)
                if not bodyless:
                    try:
                        await self._send_body(req, up)
                    except HttpError as exc:  # the client's body framing broke mid-stream
                        up.close()  # the backend sees an incomplete body, never a smuggled request
                        return await self._refuse(exc.status, exc.reason)
                resp_head = await asyncio.wait_for(self._read_upstream_head(up), UPSTREAM_TIMEOUT)
            except TimeoutError:
                up.close()
                return await self._upstream_failed(fwd, 504, "no response in time")
            except (ConnectionError, asyncio.IncompleteReadError, HttpError) as exc:
                up.close()
                if attempt == 1 and up.reused and bodyless and not isinstance(exc, HttpError):
                    continue  # the idle pooled connection had been closed by the backend
                return await self._upstream_failed(fwd, 502, f"upstream error: {exc!r}")
            break
        return await self._relay_response(req, fwd, up, resp_head)

    async def _upstream_failed(self, fwd: Forward, status: int, why: str) -> bool:
        self.stats.counters["upstream_errors"] += 1
        log.warning("event=upstream_failed backend=%s:%d status=%d reason=%s", fwd.backend.host, fwd.backend.port,
                    status, why)
        with contextlib.suppress(ConnectionError):
            self.w.write(simple_response(status, close=True))
            await self.w.drain()
        return False

    async def _send_body(self, req: Head, up: Conn) -> None:
        if req.chunked:
            dec = ChunkedDecoder()
            data, self.buf = bytes(self.buf), bytearray()
            while True:
                for piece in dec.feed(data):
                    if piece:
                        up.writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
                if dec.done:
                    up.writer.write(b"0\r\n\r\n")
                    self.buf = bytearray(dec.leftover)
                    return
                await up.writer.drain()
                data = await asyncio.wait_for(self.r.read(READ_SIZE), IDLE_TIMEOUT)
                if not data:
                    raise ClientGone()
        left = req.content_length or 0
        if self.buf:
            take = bytes(self.buf[:left])
            del self.buf[: len(take)]
            up.writer.write(take)
            left -= len(take)
        while left:
            await up.writer.drain()
            data = await asyncio.wait_for(self.r.read(min(left, READ_SIZE)), IDLE_TIMEOUT)
            if not data:
                raise ClientGone()
            up.writer.write(data)
            left -= len(data)
        await up.writer.drain()

    async def _read_upstream_head(self, up: Conn) -> bytes:
        data = await up.reader.readuntil(b"\r\n\r\n")
        while data.startswith(b"HTTP/1.1 100") or data.startswith(b"HTTP/1.0 100"):
            data = await up.reader.readuntil(b"\r\n\r\n")  # 100 Continue is ours to swallow
        return data

    async def _relay_response(self, req: Head, fwd: Forward, up: Conn, raw: bytes) -> bool:
        resp = parse_response_head(raw, req.method)
        if resp.status == 101 and req.upgrade is not None:
            self.w.write(raw)
            await self.w.drain()
            self.stats.counters["upgrades"] += 1
            await self._tunnel(up)
            return False
        keep = req.keep_alive and (resp.chunked or resp.content_length is not None)
        out = [raw.split(b"\r\n", 1)[0]]
        for k, v in resp.headers:
            lk = k.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk == b"set-cookie" and fwd.cookie_scope:
                v = scope_cookie(v, fwd.cookie_scope)
            out.append(k + b": " + v)
        if resp.chunked:
            out.append(b"Transfer-Encoding: chunked")
        if not keep:
            out.append(b"Connection: close")
        self.w.write(b"\r\n".join(out) + b"\r\n\r\n")
        self.stats.counters[f"responses_{resp.status // 100}xx"] += 1
        reusable = await self._copy_body(resp, up)
        if reusable and resp.keep_alive:
            self.pools.release(fwd.backend, up)
        else:
            up.close()
        await self.w.drain()
        return keep

    async def _copy_body(self, resp: Head, up: Conn) -> bool:
        """Stream the response body to the client; True if the upstream connection is reusable."""
        if resp.chunked:
            # pass chunked through as-is after validating its framing
            dec = ChunkedDecoder()
            while not dec.done:
                data = await up.reader.read(READ_SIZE)
                if not data:
                    raise ClientGone()
                dec.feed(data)
                self.w.write(data[: len(data) - len(dec.leftover)] if dec.done else data)
                await self.w.drain()
            return not dec.leftover
        if resp.content_length is not None:
            left = resp.content_length
            while left:
                data = await up.reader.read(min(left, READ_SIZE))
                if not data:
                    raise ClientGone()
                self.w.write(data)
                left -= len(data)
                await self.w.drain()
            return True
        while data := await up.reader.read(READ_SIZE):  # close-delimited
            self.w.write(data)
            await self.w.drain()
        return False

    async def _tunnel(self, up: Conn) -> None:
        if self.buf:
            up.writer.write(bytes(self.buf))
            self.buf.clear()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(READ_SIZE):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                if dst.can_write_eof():
                    dst.write_eof()

        await asyncio.gather(pipe(self.r, up.writer), pipe(up.reader, self.w))
        up.close()

