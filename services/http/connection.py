"""The server side of one HTTP/1.1 connection, sans-IO and synchronous: bytes and time in, events out.

`ServerConnection` reads what a client sends, request after request, as h11 does:
`receive_data(data, now)` hands it bytes, `next_event()` says what they make:

- `Request(head)`: a complete, valid request head (`http1.Head`);
- `Data(data)`: body bytes (a chunked body's payload without its framing);
- `END_OF_MESSAGE`: the request is complete (also right after a request without a body);
- `NEED_DATA`: nothing more until more bytes come;
- `PAUSED`: a request is complete and the next one waits for `start_next_cycle()` (what the client
  pipelines meanwhile is kept, `buffered` says how much, for the adapter's backpressure);
- `ProtocolError(status, reason)`: the client's bytes can never be a valid request; the answer's
  status (400, 414, 431, 501, 505 ...). The connection is done: the same error comes again.

It owns the deadlines of what it waits for from the client, as plain times (`deadline`; infinite
while the adapter waits for someone else): the head deadline (from the connection's start, and from
a head's first byte after a keep-alive idle time), the idle timeout between requests, and the body's
minimum rate (`limits.body_deadline`). `expire()` says what a passed deadline means. The adapter
(`proxy.py` ClientConnection) keeps the transports, the backends, the queue and the log.

A head is scanned once per byte however it arrives (`framing.HeadScan`): a client dripping a head
one byte per read costs O(1) per byte, never a rescan of what it sent before.
"""

from __future__ import annotations

from proxyd.config import WebLimits
from services.http.framing import Body, HeadScan
from services.http.http1 import Head, HttpError, parse_request_head
from services.http.limits import body_deadline

# states: waiting for a head's first byte, inside a head, inside a body, request complete, broken
IDLE, HEAD, BODY, DONE, ERROR = range(5)
NEVER = float("inf")


class Request:
    __slots__ = ("head",)

    def __init__(self, head: Head) -> None:
        self.head = head

    def __repr__(self) -> str:
        return f"Request({self.head.method!r} {self.head.target!r})"


class Data:
    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Data({self.data!r})"


class ProtocolError:
    """The client broke the protocol (or took too long): answer `status`, then close."""

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str) -> None:
        self.status, self.reason = status, reason

    def __repr__(self) -> str:
        return f"ProtocolError({self.status}, {self.reason!r})"


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


END_OF_MESSAGE = _Marker("END_OF_MESSAGE")
NEED_DATA = _Marker("NEED_DATA")
PAUSED = _Marker("PAUSED")
Event = Request | Data | ProtocolError | _Marker


class ServerConnection:
    """One client connection's requests, read from its bytes. See the module docstring."""

    __slots__ = ("limits", "buf", "scan", "state", "body", "deadline", "now", "body_started", "body_received",
                 "ended", "error")

    def __init__(self, limits: WebLimits, now: float) -> None:
        self.limits = limits
        self.buf: bytes | bytearray = b""  # received, not yet turned into events
        self.scan = HeadScan()
        self.state = IDLE
        self.body: Body | None = None
        self.now = now
        self.deadline = now + limits.head_timeout
        self.body_started = 0.0
        self.body_received = 0  # body bytes received so far (with a chunked body's framing), for the rate
        self.ended = True  # END_OF_MESSAGE of the current request has been given out
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self.buf)

    def receive_data(self, data: bytes, now: float) -> None:
        self.now = now
        buf = self.buf
        if not buf:
            self.buf = data  # the usual read: kept as it is, not copied
        else:
            if isinstance(buf, bytes):
                buf = self.buf = bytearray(buf)
            buf += data
        if self.state == BODY:
            self.body_received += len(data)
            self.deadline = body_deadline(self.body_started, self.body_received, now, self.limits)

    def next_event(self) -> Event:
        state = self.state
        if state <= HEAD:
            return self._head()
        if state == BODY:
            return self._body()
        if state == DONE:
            if not self.ended:
                self.ended = True
                return END_OF_MESSAGE
            return PAUSED
        assert self.error is not None
        return self.error

    def start_next_cycle(self, now: float, limits: WebLimits | None = None) -> None:
        """The answer to the last request is out and the connection stays: read the next request
        (within the idle timeout; `limits`: the listener's current ones, if they changed)."""
        if self.state != DONE:
            raise RuntimeError(f"start_next_cycle in state {self.state}")
        if limits is not None:
            self.limits = limits
        self.state = IDLE
        self.ended = True
        self.now = now
        self.deadline = now + self.limits.idle_timeout

    def skip_body(self) -> bool:
        """A refused request's body is not wanted: drop it if the whole of it is already here (the
        next request can be read), False when it is chunked or still coming (the adapter closes)."""
        if self.state == DONE:
            return True
        body = self.body
        if self.state != BODY or body is None or body.chunked or body.left > len(self.buf):
            return False
        self._consume(body.left)
        self._done()
        return True

    def take_buffered(self) -> bytes:
        """What was received and not read (the first bytes of a tunnel after 101 Switching Protocols)."""
        buf, self.buf = self.buf, b""
        return bytes(buf)

    def expire(self) -> ProtocolError | None:
        """`deadline` has passed: None when the connection was idle (close it quietly), else the
        refusal to answer with."""
        if self.state == IDLE:
            return None
        if self.state == HEAD:
            return self._fail(HttpError(408, "request head not received in time"))
        if self.state == BODY:
            return self._fail(HttpError(408, "request body below the minimum rate or stalled"))
        return self.error

    # -- reading ----------------------------------------------------------------------------------

    def _head(self) -> Event:
        buf = self.buf
        if not buf:
            return NEED_DATA
        scan = self.scan
        # a whole head in one read, nothing before it (the usual case): parse_request_head checks
        # all HeadScan would, so the scan is skipped
        end = buf.find(b"\r\n\r\n") if not scan.scanned else -1
        if end >= 0:
            end += 4
        else:
            try:
                end = scan.end(buf)
            except HttpError as exc:  # a head that can never be valid is refused now, not at its deadline
                return self._fail(exc)
            if end < 0:
                if self.state == IDLE:  # the head deadline runs from its first byte
                    self.state = HEAD
                    self.deadline = self.now + self.limits.head_timeout
                return NEED_DATA
            scan.reset()
        raw = buf if isinstance(buf, bytes) and end == len(buf) else bytes(buf[:end])
        self._consume(end)
        try:
            head = parse_request_head(raw)
        except HttpError as exc:
            return self._fail(exc)
        now = self.now
        self.body_started = now
        if head.chunked:
            self.body = Body(0, True)
            self.body_received = 0
        elif head.content_length:
            self.body = Body(head.content_length)
            self.body_received = min(len(self.buf), head.content_length)
        else:
            self._done()
            self.ended = False
            return Request(head)
        self.state = BODY
        self.ended = False
        self.deadline = body_deadline(now, self.body_received, now, self.limits)
        return Request(head)

    def _body(self) -> Event:
        buf = self.buf
        if not buf:
            return NEED_DATA
        body = self.body
        assert body is not None
        if body.chunked:
            spans: list[tuple[int, int]] = []
            try:
                used = body.feed(buf, spans)
            except HttpError as exc:  # the body's framing broke mid-stream: the data before it, then the error
                error = self._fail(exc)
                data = b"".join([buf[s:e] for s, e in spans if e > s])
                return Data(data) if data else error
            data = b"".join([buf[s:e] for s, e in spans if e > s])
        else:
            used = body.feed(buf)
            data = buf[:used] if isinstance(buf, bytes) else bytes(memoryview(buf)[:used])
        self._consume(used)
        if body.done:
            self._done()
        if data:
            return Data(data)
        return self.next_event()

    def _done(self) -> None:
        self.state = DONE
        self.body = None
        self.deadline = NEVER  # the adapter's deadlines (backend, queue) apply until the next cycle

    def _consume(self, n: int) -> None:
        buf = self.buf
        if n >= len(buf):
            self.buf = b""
        elif isinstance(buf, bytes):  # once: many pipelined requests in one read must not copy the rest each
            self.buf = bytearray(memoryview(buf)[n:])
        else:
            del buf[:n]

    def _fail(self, exc: HttpError) -> ProtocolError:
        self.state = ERROR
        self.body = None
        self.deadline = NEVER
        self.error = ProtocolError(exc.status, exc.reason)
        return self.error
