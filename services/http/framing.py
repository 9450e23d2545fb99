"""Where HTTP/1.1 messages begin and end, read incrementally: the one framing reader of the HTTP
side (client requests, backend responses, provisioning). Sans-IO and synchronous.

Together with `http1.py` (the grammar of one complete head) this is the HTTP/1.1 core; the asyncio
adapters (`proxy.py`, `upstream.py`) only move bytes between it and the transports:

- `HeadScan.end(buf)`: where the head in a growing buffer ends, or -1 for "more, please". Every byte
  is looked at once however the head arrives (a client dripping one byte per read costs O(1) per
  byte, not a rescan of the buffer); a bare CR or LF, or a head over the limits, is refused as soon
  as it is in, not when the head deadline passes.
- `Body`: a body's framing (Content-Length, chunked, until close). `feed(data, spans)` says how many
  bytes of `data` belong to the body and, given a list, where its data lies in it, so a
  request body can be re-framed and a response passed through unchanged by the same reader.
  There is one chunked parser, for both directions; only the status of a refusal differs (400 or
  431 towards a client, 502 for a backend's answer).
- `Valve`: the one backpressure rule. A side's reading stops while any reason to stop holds (the
  other side's write buffer is full, bytes are held for a backend not yet connected, a pipelining
  client waits) and resumes when the last one is gone.

Every refusal is an `HttpError` with the status to answer.
"""

from __future__ import annotations

import re

from services.http.http1 import (
    MAX_CHUNK_LINE,
    MAX_HEAD,
    MAX_REQUEST_LINE,
    Head,
    HttpError,
    chunk_size,
    trailer_line,
)

# a CR not followed by LF, or a LF not preceded by CR (searched with an end that leaves out a CR
# still waiting for its LF)
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


def _head_end_py(buf: bytes | bytearray, start: int) -> int:
    """The scan of `HeadScan.end` from `start` (nothing before it holds a bare CR/LF or the end):
    r > 0, the head ends at r; 0, a bare CR or LF; r < 0, no end yet and nothing wrong up to
    -r - 1 (a CR at the very end still waits for its LF). The reference for `_chead.head_end`."""
    e = buf.find(b"\r\n\r\n", start - 3 if start > 3 else 0)
    limit = e + 4 if e >= 0 else len(buf) - (buf[-1:] == b"\r")
    if _BARE.search(buf, start, limit) is not None:
        return 0
    return e + 4 if e >= 0 else -limit - 1


try:  # the C scan (services/http/_chead.c), equal to _head_end_py (tests/services/http/test_chead.py)
    from services.http._chead import head_end as _head_end
except ImportError:
    _head_end = _head_end_py


class HeadScan:
    """Finds the end of the head at the start of a buffer that only grows at its end between calls.

    `end(buf)` -> the offset just past the blank line, or -1 while the head is incomplete. After a
    head is taken out of the buffer (or the buffer is replaced), `reset()` before the next one.
    """

    __slots__ = ("scanned", "line", "request")

    def __init__(self, request: bool = True) -> None:
        self.request = request
        self.scanned = 0  # bytes known to hold no bare CR/LF and no end of head
        self.line = False  # the first line's CRLF has been seen

    def reset(self) -> None:
        self.scanned = 0
        self.line = False

    def end(self, buf: bytes | bytearray) -> int:
        start = self.scanned
        r = _head_end(buf, start)
        if r > 0:
            self.reset()
            return r
        if not r:
            raise self._error(400, "bare LF or CR in head")
        limit = -r - 1
        if not self.line:
            self.line = buf.find(b"\r\n", start - 1 if start else 0) >= 0
            if not self.line and len(buf) > MAX_REQUEST_LINE:
                raise self._error(414, "request line too long")
        if len(buf) > MAX_HEAD:
            raise self._error(431, "request head too large")
        self.scanned = limit
        return -1

    def _error(self, status: int, reason: str) -> HttpError:
        if self.request:
            return HttpError(status, reason)
        return HttpError(502, "upstream: " + reason.replace("request line", "status line").replace("request ", ""))


# chunked states
_SIZE, _DATA, _CRLF, _TRAILER, _DONE = range(5)


class Body:
    """The framing of one message body, read as it arrives.

    `left`: Content-Length bytes still to come, or -1 for a body that ends when the connection
    does (a response without length); `chunked` bodies end with their last chunk and trailers
    (checked by the RFC 9112 grammar, then dropped: nothing the proxy forwards reads them).
    """

    __slots__ = ("left", "chunked", "state", "line", "trailer", "request")

    def __init__(self, length: int | None = 0, chunked: bool = False, request: bool = True) -> None:
        self.left = -1 if length is None else length
        self.chunked = chunked
        self.request = request
        self.state = _SIZE  # chunked only: where in the chunk grammar the next byte falls
        self.line = b""  # chunked only: a line begun in an earlier read
        self.trailer = 0  # chunked only: bytes of the trailer section so far

    @classmethod
    def of(cls, head: Head, request: bool) -> Body:
        """A request without framing fields has no body; a response without them runs until close."""
        if head.chunked:
            return cls(0, True, request)
        return cls(head.content_length or 0 if request else head.content_length, False, request)

    @property
    def done(self) -> bool:
        return self.state == _DONE if self.chunked else self.left == 0

    def feed(self, data: bytes | bytearray, spans: list[tuple[int, int]] | None = None) -> int:
        """How many bytes of `data` belong to the body (the rest follows it). Given a list, appends
        to `spans` the (start, end) offsets of the body's data within `data` (a chunked body's
        without its framing)."""
        if not self.chunked:
            n = self.left
            used = n if 0 <= n < len(data) else len(data)
            if n >= 0:
                self.left = n - used
            if spans is not None and used:
                spans.append((0, used))
            return used
        return self._chunks(data, spans)

    def _chunks(self, data: bytes | bytearray, spans: list[tuple[int, int]] | None) -> int:
        i, n = 0, len(data)
        state = self.state
        while i < n and state != _DONE:
            if state == _DATA:
                take = min(self.left, n - i)
                if spans is not None:
                    spans.append((i, i + take))
                i += take
                self.left -= take
                if not self.left:
                    state = _CRLF
                continue
            if state == _CRLF:  # exactly CRLF after chunk data, refused at the first wrong byte
                got = self.line + data[i:i + 2 - len(self.line)]
                i += len(got) - len(self.line)
                if not b"\r\n".startswith(got):
                    raise self._error("chunk not followed by CRLF")
                self.line = b"" if len(got) == 2 else got
                if not self.line:
                    state = _SIZE
                continue
            j = data.find(b"\n", i)
            if j < 0:  # the line goes on in a later read: only what is new is looked at
                piece = data[i:]
                if b"\r" in (self.line[-1:] + piece)[:-1]:
                    raise self._error("bare CR in chunked framing")
                self.line += piece
                self._line_limit(len(self.line), state)
                i = n
                break
            line, self.line = self.line + data[i:j + 1], b""
            i = j + 1
            self._line_limit(len(line) - 2, state)
            if not line.endswith(b"\r\n"):
                raise self._error("bare LF in chunked framing")
            if state == _SIZE:
                self.left = chunk_size(line[:-2], 400 if self.request else 502)
                state = _DATA if self.left else _TRAILER
                self.trailer = 0
            elif line == b"\r\n":
                state = _DONE
            else:
                self.trailer += len(line)
                trailer_line(line[:-2], 400 if self.request else 502)
        self.state = state
        return i

    def _line_limit(self, length: int, state: int) -> None:
        if state == _SIZE and length > MAX_CHUNK_LINE:
            raise self._error("chunk size line too long")
        if state == _TRAILER and self.trailer + length > MAX_HEAD:
            raise HttpError(431 if self.request else 502, "trailers too large")

    def _error(self, reason: str) -> HttpError:
        return HttpError(400, reason) if self.request else HttpError(502, f"upstream: {reason}")


class Valve:
    """Whether one side's reading is stopped, and why. `stop(why)` is True when reading must pause
    now (the first reason), `go(why)` True when it may resume now (the last reason went)."""

    __slots__ = ("reasons",)

    def __init__(self) -> None:
        self.reasons: set[str] = set()

    def stop(self, why: str) -> bool:
        first = not self.reasons
        self.reasons.add(why)
        return first

    def go(self, why: str) -> bool:
        if why not in self.reasons:
            return False
        self.reasons.discard(why)
        return not self.reasons

    def held(self, why: str, size: int, limit: int) -> bool:
        """The rule for bytes held for the other side: stop reading once more than `limit` wait."""
        return size > limit and self.stop(why)

    def __bool__(self) -> bool:
        return bool(self.reasons)
