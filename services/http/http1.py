"""HTTP/1.1 message heads and body framing, strict where a proxy must be (request smuggling). Sans-IO.

`parse_request_head()` / `parse_response_head()` take one complete head (up to and including the
blank line); `ChunkedDecoder` turns a chunked body into raw chunk data. Every refusal is an
`HttpError` carrying the status to answer with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Limits, and why: 8 KiB request line is what nginx and Apache accept by default; 32 KiB and 100
# fields of headers cover large cookies with room to spare while bounding memory per connection.
MAX_REQUEST_LINE = 8192
MAX_HEAD = 32768
MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINE = re.compile(rb"^HTTP/1\.([01]) ([1-5][0-9][0-9])(?: (.*))?$")
METHODS_REFUSED = frozenset({b"CONNECT", b"TRACE"})


class HttpError(Exception):
    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}")


@dataclass(slots=True)
class Head:
    """A parsed head. `headers` keeps order and original case: (name, value) as bytes."""

    method: bytes
    target: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    status: int = 0
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    upgrade: bytes | None = None

    def get(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None


def find_head_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Index just after the blank line ending a head, or -1 when it is not complete yet."""
    i = buf.find(b"\r\n\r\n", start)
    return -1 if i < 0 else i + 4


def _split_lines(head: bytes) -> list[bytes]:
    body = head[:-4] if head.endswith(b"\r\n\r\n") else head
    if b"\n" in body.replace(b"\r\n", b""):
        raise HttpError(400, "bare LF or CR in head")
    if b"\r" in body.replace(b"\r\n", b""):
        raise HttpError(400, "bare CR in head")
    return body.split(b"\r\n")


def _fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    if len(lines) > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    out = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):
            raise HttpError(400, "malformed header field")
        value = value.strip(b" \t")
        if _VALUE_BAD.search(value):
            raise HttpError(400, "control character in header value")
        out.append((name, value))
    return out


def _framing(h: Head, *, request: bool) -> None:
    te = [v for k, v in h.headers if k.lower() == b"transfer-encoding"]
    cl = [v for k, v in h.headers if k.lower() == b"content-length"]
    if te:
        if cl:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if len(te) != 1 or te[0].lower() != b"chunked":
            raise HttpError(501 if request else 502, "unsupported Transfer-Encoding")
        h.chunked = True
    elif cl:
        if len(cl) != 1 or not cl[0].isdigit() or len(cl[0]) > 15:
            raise HttpError(400 if request else 502, "malformed or repeated Content-Length")
        h.content_length = int(cl[0])
    conn = b",".join(v for k, v in h.headers if k.lower() == b"connection").lower()
    tokens = {t.strip() for t in conn.split(b",")}
    if h.version == b"HTTP/1.0":
        h.keep_alive = b"keep-alive" in tokens
    else:
        h.keep_alive = b"close" not in tokens
    if b"upgrade" in tokens:
        h.upgrade = h.get(b"upgrade")


def parse_request_head(head: bytes) -> Head:
    lines = _split_lines(head)
    line = lines[0]
    if len(line) > MAX_REQUEST_LINE:
        raise HttpError(414, "request line too long")
    if len(head) > MAX_HEAD:
        raise HttpError(431, "request head too large")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise HttpError(400, "malformed method")
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(505, "HTTP version not supported")
    if method in METHODS_REFUSED:
        raise HttpError(405, f"{method.decode()} is not allowed")
    if method == b"OPTIONS" and target == b"*":
        raise HttpError(400, "OPTIONS * is not allowed")
    h = Head(method, target, version, _fields(lines[1:]))
    hosts = [v for k, v in h.headers if k.lower() == b"host"]
    if len(hosts) > 1 or (version == b"HTTP/1.1" and not hosts):
        raise HttpError(400, "exactly one Host header is required")
    _framing(h, request=True)
    return h


def parse_response_head(head: bytes, request_method: bytes) -> Head:
    lines = _split_lines(head)
    m = _STATUS_LINE.match(lines[0])
    if not m:
        raise HttpError(502, "malformed status line from upstream")
    h = Head(b"", b"", b"HTTP/1." + m.group(1), _fields(lines[1:]), status=int(m.group(2)))
    _framing(h, request=False)
    if request_method == b"HEAD" or h.status in (204, 304) or 100 <= h.status < 200:
        h.content_length, h.chunked = 0, False
    return h


class ChunkedDecoder:
    """Feed raw bytes; get chunk payloads. `done` once the last chunk and trailers are read."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.remaining = 0  # bytes of chunk data still to come (+2 for its CRLF when >0)
        self.state = "size"
        self.done = False

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out: list[bytes] = []
        while not self.done:
            if self.state == "size":
                i = self.buf.find(b"\r\n")
                if i < 0:
                    if len(self.buf) > MAX_CHUNK_LINE:
                        raise HttpError(400, "chunk size line too long")
                    break
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                size = line.split(b";", 1)[0]
                if not size or len(size) > 15 or not all(c in b"0123456789abcdefABCDEF" for c in size):
                    raise HttpError(400, "malformed chunk size")
                self.remaining = int(size, 16)
                self.state = "data" if self.remaining else "trailer"
            elif self.state == "data":
                if not self.buf:
                    break
                take = bytes(self.buf[: self.remaining])
                del self.buf[: len(take)]
                self.remaining -= len(take)
                out.append(take)
                if self.remaining == 0:
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(self.buf) < 2:
                    break
                if self.buf[:2] != b"\r\n":
                    raise HttpError(400, "chunk not followed by CRLF")
                del self.buf[:2]
                self.state = "size"
            else:  # trailer section: lines until an empty one; trailers are dropped
                i = self.buf.find(b"\r\n")
                if i < 0:
                    if len(self.buf) > MAX_HEAD:
                        raise HttpError(431, "trailers too large")
                    break
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                if not line:
                    self.done = True
        return out

    @property
    def leftover(self) -> bytes:
        return bytes(self.buf)
