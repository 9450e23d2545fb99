"""One client connection as an asyncio Protocol: read a request head, route it, stream it upstream,
stream the answer back.

Bytes go straight from one transport to the other (no streams, no per-request task); bodies are
never buffered whole: a full write buffer on one side pauses reading on the other. Response heads
are re-emitted without hop-by-hop fields; response bodies pass through as they came, only their
framing is followed to know where they end. Every refusal is answered with its status and logged
once; nothing unrouted reaches a backend. Timeouts are deadlines checked by one sweeper per
service (`sweep()`), not a timer per request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter

from proxyd.config import WebLimits
from proxyd.events import HttpEvents
from proxyd.service import LATENCY_BUCKETS, Histogram
from services.http import connection
from services.http.authority import Names, request_target
from services.http.canonical import BadPath, split_target
from services.http.connection import END_OF_MESSAGE, NEED_DATA, Data, ProtocolError, Request, ServerConnection
from services.http.framing import Body, HeadScan, Valve
from services.http.http1 import MAX_HEAD, Head, HttpError, parse_response_head
from services.http.limits import BUFFER_BODY, DEFAULT, ConnectionGate
from services.http.routes import Forward, Redirect, Refuse, Router
from services.http.upstream import Pools, UpstreamConnection

log = logging.getLogger("services.http")

UPSTREAM_TIMEOUT = 60.0  # default: a backend must start answering within 60 s (504 otherwise), as nginx
MAX_BODY = 4 * 2**30  # 4 GiB request bodies at most (413 above)
MAX_PENDING = 256 * 1024  # request bytes held while the backend connection is being opened
SMALL_WRITE = 16384  # below this, a head and the body bytes behind it go out in one write

REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           411: "Length Required", 417: "Expectation Failed", 429: "Too Many Requests",
           421: "Misdirected Request", 503: "Service Unavailable",
           413: "Content Too Large", 414: "URI Too Long", 431: "Request Header Fields Too Large",
           501: "Not Implemented", 502: "Bad Gateway", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
           301: "Moved Permanently", 302: "Found"}
RESPONSE_KEYS = tuple(f"responses_{n}xx" for n in range(10))

# Connection states (IDLE: reading a request head, the core says whether one has begun; BUFFERING: a
# small body is being received whole before a backend is taken; QUEUED: the request waits for one
# of its backend's slots, services/http/upstream.py Pools)
IDLE, BODY, WAIT, TUNNEL, CLOSED, BUFFERING, QUEUED = range(7)
# Response states (R_BODY: `rbody` says where the body ends)
R_NONE, R_HEAD, R_BODY = range(3)


@dataclass
class Stats:
    counters: Counter[str] = field(default_factory=Counter)
    #: forwarded requests: from routing the request to the backend's response head (so connect
    #: and request body upload included)
    first_byte: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    #: forwarded requests: from routing the request to the last byte of the response
    duration: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))


def simple_response(status: int, body: bytes = b"", extra: bytes = b"", close: bool = False) -> bytes:
    reason = REASONS.get(status, "Error")
    if not body and status >= 400:
        body = f"{status} {reason}\n".encode()
    conn = b"Connection: close\r\n" if close else b""
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n".encode() + extra + conn + b"\r\n" + body)


def split_host(host: bytes, default_port: bytes) -> tuple[bytes, bytes]:
    """A Host value as (host, port): X-Forwarded-Host carries no port, X-Forwarded-Port the one
    the client addressed (the scheme's default when the Host names none). An IPv6 literal keeps its brackets."""
    name, colon, port = host.rpartition(b":")
    if colon and port.isdigit() and len(port) <= 5 and (b":" not in name or name.endswith(b"]")):
        return name, port
    return host, default_port


class Clock:
    """A coarse clock, advanced by the sweeper: deadlines need no system call per request (nginx does the same)."""

    __slots__ = ("now",)

    def __init__(self, now: float) -> None:
        self.now = now


class Listener:
    """What every connection accepted on one listening socket shares.

    Reconfigure swaps `router` in place: the next request on any connection sees the new table.
    """

    def __init__(self, router: Router, pools: Pools, stats: Stats, tls: bool,
                 allowed: Callable[[str], bool], conns: set[ClientConnection], clock: Clock,
                 upstream_timeout: float = UPSTREAM_TIMEOUT, names: Names | None = None,
                 gate: ConnectionGate | None = None, limits: WebLimits = DEFAULT, events: HttpEvents | None = None):
        self.router, self.pools, self.stats, self.allowed, self.conns = router, pools, stats, allowed, conns
        self.events = events or HttpEvents("http")  # the per-request log line and its counters
        self.names = names  # None: any authority of valid grammar (tests of the connection code alone)
        self.gate = gate  # plain listeners count here; TLS ones at accept, before the handshake (tls_accept.py)
        self.upstream_timeout = upstream_timeout
        self.limits = limits  # deadlines and rates (connection caps live in `gate`, backend slots in `pools`)
        self.tls = tls
        self.proto = b"https" if tls else b"http"
        self.default_port = b"443" if tls else b"80"
        self.loop = asyncio.get_running_loop()
        self.draining = False
        self.clock = clock
        #: plain-HTTP listeners: ACME HTTP-01 token -> key authorization while an order is in flight
        #: (the renewer's, ServiceContext.acme_tokens); answered before the Host check and routing
        self.acme_tokens: dict[str, str] = {}


ACME_PREFIX = b"/.well-known/acme-challenge/"


class ClientConnection(asyncio.Protocol):
    """Serves requests on one accepted client connection until it closes or times out: the asyncio
    adapter of the request side's core (`self.conn`, services/http/connection.py), which reads the
    requests, and of the backend side (`self.up`)."""

    def __init__(self, listener: Listener) -> None:
        self.shared = listener
        self.t: asyncio.Transport = None  # type: ignore[assignment]
        self.client_ip = ""
        self.client_ip_b = b""
        self.conn: ServerConnection = None  # type: ignore[assignment]  # from connection_made
        self.state = IDLE
        self.deadline = 0.0
        self.valve = Valve()  # reading from the client
        self.up_valve = Valve()  # reading from the backend (the client reads slower than it answers)
        self.up: UpstreamConnection | None = None
        self.pending: list[bytes] | None = None  # request bytes waiting for a backend connection
        self.req: Head | None = None
        self.fwd: Forward | None = None
        self.keep = True
        self.retry_head: bytes | None = None  # a bodyless request can be retried on a fresh connection once
        self.rstate = R_NONE
        self.rbuf = b""
        self.rscan = HeadScan(request=False)
        self.rbody: Body | None = None
        self.forwarded_at = 0.0  # perf_counter() when the current request was forwarded (the loop clock has ms steps)
        self.rkeep = False
        self.gated = False  # counted by the listener's gate (released when the connection goes)
        self.held = b""  # BUFFERING: the upstream head, sent once the body is whole
        self.slot: tuple | None = None  # the backend key this exchange counts against (Pools.inflight)
        # the exchange for its end event (proxyd/events.py): open from its first head byte read
        self.ex_open = False
        self.ex_t0 = 0.0
        self.ex_status = 0
        self.ex_sent = 0
        self.ex_reason: str | None = None
        self.ex_error: str | None = None
        self.ex_method: bytes | None = None
        self.ex_rid: bytes | None = None

    # -- client transport events ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("",)
        self.client_ip = str(peer[0])
        self.client_ip_b = self.client_ip.encode()
        if not self.shared.allowed(self.client_ip):
            self.state = CLOSED
            self.t.abort()
            return
        gate = self.shared.gate
        if gate is not None and not self.shared.tls:
            if not gate.admit(self.client_ip):
                self.state = CLOSED
                self.t.abort()
                return
            self.gated = True
        self.shared.conns.add(self)
        self.conn = ServerConnection(self.shared.limits, self.shared.clock.now)
        self.deadline = self.conn.deadline

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == TUNNEL:
            if self.up is not None:
                self.up.write(data)
            return
        conn = self.conn
        conn.receive_data(data, self.shared.clock.now)
        if state == IDLE:
            self._read_head()
        elif state == BODY:
            self._request_body()
        elif state == BUFFERING:
            self.deadline = conn.deadline
            if conn.buffered >= (self.req.content_length or 0):  # type: ignore[union-attr]
                self._dispatch(self.held)
        elif self.valve.held("pipeline", conn.buffered, MAX_HEAD):  # a pipelining client waits for the answer in flight
            self.t.pause_reading()

    def eof_received(self) -> bool | None:
        if self.state == TUNNEL and self.up is not None and self.up.transport is not None:
            if self.up.transport.can_write_eof():
                self.up.transport.write_eof()
                return True  # keep the other direction of the tunnel open
        if self.state in (BODY, BUFFERING):  # the body can never complete now: the backend must not get a truncated one
            self._close(why="client ended its side before the request body was complete")
            return None
        if self.state == WAIT and self.rstate != R_NONE:
            self.keep = False
            return True  # a half-closed client still gets its response, then the connection closes
        return None

    def _free_slot(self) -> None:
        key = self.slot
        if key is None:
            if self.state == QUEUED and self.fwd is not None:
                self.shared.pools.leave_queue(self.fwd.backend.key, self)
            return
        self.slot = None
        waiter = self.shared.pools.hand_over(key)
        if waiter is not None:
            waiter.slot = key
            # not from inside this connection's callback: the waiter's dispatch may refuse, close, free again
            self.shared.loop.call_soon(waiter._slot_granted)

    def _slot_granted(self) -> None:
        if self.state == QUEUED:
            self._dispatch(self.held)
            if self.state == BODY:  # what arrived while queued may have paused reading
                self._resume("pipeline")

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        self._free_slot()
        if self.gated:
            self.gated = False
            self.shared.gate.release(self.client_ip)  # type: ignore[union-attr]
        self.shared.conns.discard(self)
        self._drop_upstream("client closed the connection")
        self.state = CLOSED

    def _drop_upstream(self, why: str) -> None:
        """Let go of the backend connection; reset it when the request body is still incomplete."""
        up, self.up = self.up, None
        if up is None:
            return
        if self.state == BODY:
            log.warning("event=request_body_abandoned reason=%r client=%s backend_reset=1", why, self.client_ip)
            self.shared.stats.counters["request_bodies_abandoned"] += 1
            up.reset()
        else:
            up.close()

    def pause_writing(self) -> None:  # the client reads slower than the backend answers
        if self.up_valve.stop("client") and self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up_valve.go("client") and self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    def _pause(self, why: str) -> None:
        if self.valve.stop(why):
            self.t.pause_reading()

    def _resume(self, why: str) -> None:
        if self.valve.go(why) and self.state != CLOSED:
            self.t.resume_reading()

    def _close(self, abort: bool = False, why: str = "connection closed by the proxy") -> None:
        self._finish()
        self._free_slot()
        self._drop_upstream(why)
        self.state = CLOSED
        self.shared.conns.discard(self)
        if abort:
            self.t.abort()
        else:
            self.t.close()

    # -- request head -----------------------------------------------------------------------------

    def _read_head(self) -> None:
        ev = self.conn.next_event()
        if type(ev) is Request:
            self._request(ev.head)
        elif type(ev) is ProtocolError:  # a head that can never be valid is answered now, not at its deadline
            self.shared.stats.counters["requests"] += 1
            self._refuse(ev.status, ev.reason)
        else:  # NEED_DATA
            self.deadline = self.conn.deadline

    def _refuse(self, status: int, reason: str, *, close: bool = True, extra: bytes = b"") -> None:
        self.shared.stats.counters[f"refused_{status}"] += 1
        if not self.ex_open:
            self._begin()
        self.ex_status, self.ex_reason = status, reason  # logged once, by _finish
        out = simple_response(status, extra=extra, close=close)
        self.ex_sent += len(out)
        self.t.write(out)
        if close:
            self._close()
        else:
            self._next()

    def _begin(self) -> None:
        self.ex_open, self.ex_t0, self.ex_status, self.ex_sent = True, perf_counter(), 0, 0
        self.ex_reason = self.ex_error = self.ex_method = self.ex_rid = None

    def _finish(self) -> None:
        """The exchange ended (answered, refused, failed or cut off): its one event and count."""
        if not self.ex_open:
            return
        self.ex_open = False
        fwd = self.fwd
        shared = self.shared
        shared.events.request_end(
            route=getattr(shared.router, "kind", "instance"), client=self.client_ip, method=self.ex_method,
            status=self.ex_status or 499,  # 499: the client went away before an answer (as nginx logs it)
            sent=self.ex_sent, duration=perf_counter() - self.ex_t0, request_id=self.ex_rid,
            instance=fwd.instance if fwd is not None else None, reason=self.ex_reason, error=self.ex_error,
            upstream=fwd.backend.host_header if fwd is not None else None)

    def _request(self, req: Head) -> None:
        shared = self.shared
        shared.stats.counters["requests"] += 1
        self._begin()
        self.ex_method = req.method
        try:
            self.ex_rid, req.kept = shared.events.ids.take(req.kept)
            if shared.acme_tokens and req.target.startswith(ACME_PREFIX) and req.method == b"GET":
                answer = shared.acme_tokens.get(req.target[len(ACME_PREFIX):].decode("latin-1"))
                if answer is not None:
                    out = simple_response(200, answer.encode(), close=True)
                    self.ex_status, self.ex_sent = 200, len(out)
                    self.t.write(out)
                    return self._close()
            path, query = split_target(request_target(req.target, req.host, shared.names))
        except HttpError as exc:
            return self._refuse(exc.status, exc.reason)
        except BadPath as exc:
            refusal = shared.router.unreadable(str(exc), self.client_ip)
            return self._refuse(refusal.status, refusal.reason, extra=refusal.extra)
        if req.content_length is not None and req.content_length > MAX_BODY:
            return self._refuse(413, "body too large")
        if req.stripped:
            log.warning("event=request_fields_removed fields=%r client=%s", b", ".join(req.stripped).decode("latin-1"),
                        self.client_ip)
        self.keep = req.keep_alive and not shared.draining
        decision = shared.router.route(path, query, self.client_ip, req)
        if type(decision) is Forward:
            return self._forward(req, decision)
        if not self.conn.skip_body():  # a refused request's body is not forwarded; one already here is dropped
            self.keep = False
        if isinstance(decision, Refuse):
            return self._refuse(decision.status, decision.reason, close=decision.close or not self.keep,
                                extra=decision.extra)
        assert isinstance(decision, Redirect)
        shared.stats.counters["redirects"] += 1
        loc = decision.location.encode("latin-1")
        out = simple_response(decision.status, b"", b"Location: " + loc + b"\r\n", close=not self.keep)
        self.ex_status, self.ex_sent = decision.status, len(out)
        self.t.write(out)
        if self.keep:
            self._next()
        else:
            self._close()

    def _next(self) -> None:
        """The exchange is over and the connection stays: serve what the client pipelined meanwhile."""
        self._finish()
        self._free_slot()
        self.state = IDLE
        self.req = self.fwd = None
        self.rstate = R_NONE
        self.conn.start_next_cycle(self.shared.clock.now, self.shared.limits)
        self.deadline = self.conn.deadline
        if self.valve:
            self._resume("pipeline")
        if self.conn.buffered:
            # on the next loop turn, not from here: answering pipelined requests locally (404s,
            # redirects) would otherwise recurse once per request, thousands deep for one read
            self.shared.loop.call_soon(self._pipelined)

    def _pipelined(self) -> None:
        if self.state == IDLE and self.conn.buffered:
            self._read_head()

    # -- forwarding -------------------------------------------------------------------------------

    def _upstream_head(self, req: Head, fwd: Forward) -> bytes:
        # an application's Host is the upstream's; an instance gets the client's Host line
        host_line = b"Host: " + fwd.host.encode() if fwd.host else req.host_line
        block = host_line + b"\r\n" + req.kept if host_line else req.kept
        if req.upgrade is not None:
            block += b"Connection: Upgrade\r\nUpgrade: " + req.upgrade + b"\r\n"
        if req.chunked:
            block += b"Transfer-Encoding: chunked\r\n"
        elif req.content_length is not None:
            block += b"Content-Length: %d\r\n" % req.content_length
        host, port = split_host(req.host or b"", self.shared.default_port)
        rule = fwd.rule
        return b"%s %s HTTP/1.1\r\n%sX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n" \
            b"X-Forwarded-Port: %s\r\n%s\r\n" % (req.method, fwd.path.encode("latin-1"), block, self.client_ip_b,
                                                 self.shared.proto, host, port,
                                                 rule.forwarded_prefix if rule is not None else b"")

    def _forward(self, req: Head, fwd: Forward) -> None:
        self.req, self.fwd = req, fwd
        self.forwarded_at = perf_counter()
        out = self._upstream_head(req, fwd)
        self.rstate = R_HEAD
        self.rbuf = b""
        self.rscan.reset()
        self.retry_head = None
        n = req.content_length
        if n and n <= BUFFER_BODY and self.conn.buffered < n and not req.expect:
            # a small body is received whole first: a client dripping it costs the backend nothing
            self.state = BUFFERING
            self.held = out
            self.deadline = self.conn.deadline
            return
        self._dispatch(out)

    def _dispatch(self, out: bytes) -> None:
        """Take a backend connection and send it the head `out` and what the client sent of the body."""
        req, fwd = self.req, self.fwd
        assert req is not None and fwd is not None
        self.held = b""
        pools, key = self.shared.pools, fwd.backend.key
        if self.slot is None:  # else the slot was handed over while the request was QUEUED
            got = pools.acquire(key, self)
            if got == "queued":
                self.state = QUEUED
                self.held = out
                self.deadline = self.shared.clock.now + self.shared.limits.backend_queue_timeout
                return
            if got == "full":
                return self._backend_busy(f"{pools.per_backend} requests in flight and "
                                          f"{pools.queue} waiting")
            self.slot = key
        self.state = BODY
        if not req.chunked and not req.content_length:  # most requests: no body, no reader
            self.state = WAIT
            self.retry_head = out
        else:
            body = self._body_out()
            if isinstance(body, ProtocolError):
                return self._refuse(body.status, body.reason)
            out += body
        if self.state == WAIT:
            self.deadline = self.shared.clock.now + self.shared.upstream_timeout
        else:
            self.deadline = self.conn.deadline
        up = self.shared.pools.take(fwd.backend)
        if up is not None:
            self._attach(up, out)
        else:
            self._open_upstream(out)

    def _open_upstream(self, first: bytes) -> None:
        self.pending = [first]
        self.shared.loop.create_task(self._connect())

    async def _connect(self) -> None:
        assert self.fwd is not None
        fwd = self.fwd
        try:
            up = await self.shared.pools.connect(fwd.backend)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            if self.state not in (CLOSED, IDLE):
                self._upstream_failed(502, f"connect failed: {exc!r}")
            return
        if self.state in (CLOSED, IDLE) or self.fwd is not fwd:
            self.shared.pools.release(up)  # the client went away meanwhile; the connection is still good
            return
        pending, self.pending = self.pending or [], None
        self._attach(up, b"".join(pending))
        self._resume("connecting")

    def _attach(self, up: UpstreamConnection, first: bytes) -> None:
        self.up = up
        up.owner = self
        up.transport.write(first)  # type: ignore[union-attr]  # pooled and fresh connections have one
        if self.up_valve:  # the client still reads slower than the last backend answered
            up.transport.pause_reading()  # type: ignore[union-attr]

    def _send_up(self, data: bytes) -> None:
        if self.pending is not None:
            self.pending.append(data)
            if self.valve.held("connecting", sum(map(len, self.pending)), MAX_PENDING):
                self.t.pause_reading()
        elif self.up is not None:
            self.up.write(data)

    def _body_out(self) -> bytes | ProtocolError:
        """What the client sent of the body so far, framed for the backend (a chunked body re-framed:
        its chunk extensions and trailers are not passed on); at its end the request is sent."""
        conn, chunked, out = self.conn, self.req.chunked, []  # type: ignore[union-attr]
        while True:
            ev = conn.next_event()
            if type(ev) is Data:
                out.append(b"%x\r\n%b\r\n" % (len(ev.data), ev.data) if chunked else ev.data)
            elif ev is END_OF_MESSAGE:
                if chunked:
                    out.append(b"0\r\n\r\n")
                self._request_sent()
                break
            elif ev is NEED_DATA:
                break
            else:
                assert type(ev) is ProtocolError
                return ev
        return out[0] if len(out) == 1 else b"".join(out)

    def _request_body(self) -> None:
        self.deadline = self.conn.deadline
        out = self._body_out()
        if isinstance(out, ProtocolError):  # the client's body framing broke mid-stream
            # the backend sees a reset, never a truncated body it could take as whole, nor a smuggled request
            self._drop_upstream(f"chunked framing broke: {out.reason}")
            if self.rstate == R_HEAD:
                self._refuse(out.status, out.reason)
            else:
                self._close()
            return
        if out:
            self._send_up(out)

    def _request_sent(self) -> None:
        if self.state == BODY:
            self.state = WAIT
            if self.rstate == R_HEAD:
                self.deadline = self.shared.clock.now + self.shared.upstream_timeout

    def _upstream_failed(self, status: int, why: str) -> None:
        self.shared.stats.counters["upstream_errors"] += 1  # the request's end event has `why` (flood-limited)
        if self.state != CLOSED:
            out = simple_response(status, close=True)
            self.ex_status, self.ex_error, self.ex_sent = status, why, self.ex_sent + len(out)
            self.t.write(out)
        self._close()

    # -- upstream events (this connection is the owner of self.up) --------------------------------

    def upstream_pause(self) -> None:
        self._pause("upstream")

    def upstream_resume(self) -> None:
        self._resume("upstream")

    def upstream_eof(self) -> None:
        pass  # connection_lost follows and decides

    def upstream_lost(self) -> None:
        up, self.up = self.up, None
        if self.state == CLOSED:
            return
        if self.state == TUNNEL:
            self._close()
        elif self.rstate == R_HEAD:
            if up is not None and up.reused and self.retry_head is not None and not self.rbuf:
                head, self.retry_head = self.retry_head, None  # the idle pooled connection had been closed
                self._open_upstream(head)
                return
            self._upstream_failed(502, "upstream closed before answering")
        elif self.rstate == R_BODY and self.rbody is not None and self.rbody.left < 0 and not self.rbody.chunked:
            self._response_done(False)  # a body that ends with the connection
        elif self.rstate != R_NONE:
            self._close()  # truncated response: the client sees the connection end

    def upstream_data(self, data: bytes) -> None:
        rstate = self.rstate
        if rstate == R_HEAD:
            self._response_head(data)
        elif rstate == R_BODY:
            self._response_body(data)
        elif self.state == TUNNEL:
            self.ex_sent += len(data)
            self.t.write(data)
        elif self.up is not None:  # bytes nobody asked for: the connection is out of step
            self.up.close()
            self.up = None

    def _response_body(self, data: bytes) -> None:
        """Pass the body on as it came; its framing only says where it ends."""
        body = self.rbody
        assert body is not None
        try:
            used = body.feed(data)
        except HttpError:
            self._close()  # the response is cut off here; the client sees the connection end
            return
        self.ex_sent += used
        self.t.write(data if used == len(data) else data[:used])
        if body.done:
            self._response_done(used == len(data))

    def _response_head(self, data: bytes) -> None:
        buf = self.rbuf + data if self.rbuf else data
        while True:
            try:
                end = self.rscan.end(buf)
            except HttpError as exc:
                return self._upstream_failed(502, exc.reason)
            if end < 0:
                self.rbuf = buf
                return
            raw, buf = buf[:end], buf[end:]
            self.rbuf = b""
            req = self.req
            assert req is not None
            try:
                resp = parse_response_head(raw, req.method)
            except HttpError as exc:
                return self._upstream_failed(502, exc.reason)
            if resp.status == 101 and req.upgrade is not None:
                self.shared.stats.counters["upgrades"] += 1
                self.ex_status, self.ex_sent = 101, self.ex_sent + len(raw) + len(buf)
                self.state = TUNNEL
                self.rstate = R_NONE
                self.deadline = float("inf")
                self.t.write(raw + buf)
                rest = self.conn.take_buffered()
                if rest:
                    assert self.up is not None
                    self.up.write(rest)
                return
            if resp.status == 101:  # a switch nobody asked for (an Upgrade we stripped): never a tunnel
                return self._upstream_failed(502, "101 Switching Protocols to a request without Upgrade")
            if resp.status < 200:  # interim answers (100 Continue) go to HTTP/1.1 clients as they are
                if req.version == b"HTTP/1.1":
                    self.t.write(raw)
                continue
            break
        deny = self.fwd.deny if self.fwd is not None else None
        if deny is not None and resp.status in deny.statuses:  # the backend's own "no" looks like the route's
            refusal = deny.denied(self.client_ip)
            return self._refuse(refusal.status, f"backend answered {resp.status}: {refusal.reason}",
                                extra=refusal.extra)
        self._start_response(resp, raw, buf)

    def _start_response(self, resp: Head, raw: bytes, rest: bytes) -> None:
        fwd = self.fwd
        assert fwd is not None
        self.deadline = self.shared.clock.now + self.shared.limits.idle_timeout
        self.shared.stats.counters[RESPONSE_KEYS[resp.status // 100]] += 1
        self.shared.stats.first_byte.observe(perf_counter() - self.forwarded_at)
        keep = self.keep and (resp.chunked or resp.content_length is not None)
        self.keep = keep
        self.rkeep = resp.keep_alive
        head = raw[: raw.find(b"\r\n") + 2] + resp.kept
        rule = fwd.rule
        if rule is not None and (resp.cookies or resp.urls):
            host = self.req.host if self.req is not None else None
            head = rule.head(head, self.shared.proto + b"://" + host if host else None, host)
        if resp.chunked:
            head += b"Transfer-Encoding: chunked\r\n"
        if not keep:
            head += b"Connection: close\r\n"
        head += b"\r\n"
        self.ex_status, self.ex_sent = resp.status, self.ex_sent + len(head)
        body = self.rbody = Body.of(resp, False)
        self.rstate = R_BODY
        if body.left < 0 and not body.chunked:
            self.rkeep = False  # it ends when the backend closes
        if body.done:
            self.t.write(head)
            return self._response_done(not rest)
        if not rest:
            self.t.write(head)
        elif len(rest) < SMALL_WRITE:  # the common case: head and whole body in one write
            try:
                used = body.feed(rest)
            except HttpError:
                self.t.write(head)
                return self._close()
            self.ex_sent += used
            self.t.write(head + (rest if used == len(rest) else rest[:used]))
            if body.done:
                self._response_done(used == len(rest))
        else:
            self.t.write(head)
            self._response_body(rest)

    def _response_done(self, clean: bool) -> None:
        """The response is complete. `clean`: no stray bytes followed it on the upstream connection."""
        self._free_slot()
        up, self.up = self.up, None
        self.rstate = R_NONE
        self.rbody = None
        self.shared.stats.duration.observe(perf_counter() - self.forwarded_at)
        if up is not None:
            if self.up_valve and up.transport is not None:
                up.transport.resume_reading()  # an idle pooled connection must notice the backend closing
            if clean and self.rkeep and self.state == WAIT:
                self.shared.pools.release(up)
            else:
                up.close()
        if self.state == CLOSED:
            return
        if not self.keep or self.state == BODY:
            self._close()  # a body the backend did not wait for cannot be resynchronised: close
            return
        self._next()

    def _backend_busy(self, why: str) -> None:
        fwd = self.fwd
        assert fwd is not None
        self._refuse(503, f"backend {fwd.backend.host}:{fwd.backend.port}: {why}",
                     extra=b"Retry-After: %d\r\n" % self.shared.limits.retry_after)

    # -- timeouts and draining --------------------------------------------------------------------

    def expire(self) -> None:
        """Called by the sweeper once `deadline` has passed."""
        state = self.state
        if state == IDLE:
            err = self.conn.expire()
            if err is None:
                self._close()  # idle between requests: closed quietly
            else:
                self._refuse(err.status, err.reason)
        elif state == QUEUED:
            self.shared.pools.saturated += 1
            self._backend_busy("no free slot within the queue timeout")
        elif self.rstate == R_HEAD and state == WAIT:
            self._upstream_failed(504, "no response in time")
        elif self.rstate == R_HEAD and state in (BODY, BUFFERING):
            # slow POST: the backend (if one was taken) is reset, never handed a truncated body
            err = self.conn.expire() or ProtocolError(408, "request body below the minimum rate or stalled")
            self._drop_upstream(err.reason)
            self._refuse(err.status, err.reason)
        else:
            log.warning("event=connection_timeout client=%s", self.client_ip)
            self._close(why="request body timed out")

    def abort(self) -> None:
        self._close(abort=True)

    def drain(self) -> None:
        """The service stops: idle connections close now, busy ones after their response."""
        self.keep = False
        if self.state == IDLE and self.conn.state == connection.IDLE:
            self._close()


def sweep(conns: set[ClientConnection], clock: Clock, now: float, lag: float = 0.0) -> None:
    """Expire the connections whose deadline has passed. Deadlines are `clock.now` plus a timeout,
    and `clock.now` trails real time by up to `lag` (the sweep interval): a deadline counts as passed
    only `lag` later, so a timeout never fires early (a 1.5 s upstream timeout fired after 1.3 s) and
    at most two sweep intervals late."""
    clock.now = now
    for c in [c for c in conns if c.deadline + lag < now]:
        c.expire()
