"""HTTP/1.1 message heads and body framing, strict where a proxy must be (request smuggling). Sans-IO.

`parse_request_head()` / `parse_response_head()` take one complete head (up to and including the
blank line); `chunk_size()` and `trailer_line()` are the grammar of chunked framing, which
`framing.py` reads incrementally. Every refusal is an `HttpError` carrying the status to answer with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

# Limits, and why: 8 KiB request line is what nginx and Apache accept by default; 32 KiB and 100
# fields of headers cover large cookies with room to spare while bounding memory per connection.
MAX_REQUEST_LINE = 8192
MAX_HEAD = 32768
MAX_HEADERS = 100
MAX_CHUNK_LINE = 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A head is handled as its field lines. Each distinct line is validated and classified once and
# remembered (bytes -> kind and value): most lines repeat from request to request (Host, User-Agent,
# Accept, Server, Content-Type, Connection), so the usual head costs one dict lookup per line. The
# cache holds only lines that passed the check, is keyed by the exact bytes, and is bounded.
# Only a refused block is taken apart again, to say exactly what is wrong.
_LINE_OK = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*")
(F_OTHER, F_HOST, F_LENGTH, F_TE, F_CONNECTION, F_UPGRADE, F_SET_COOKIE, F_HOP, F_UNTRUSTED, F_URL,
 F_RETARGET, F_EXPECT) = range(12)
HOP_BY_HOP = (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
              b"upgrade", b"proxy-authorization", b"proxy-authenticate", b"http2-settings")
# The one list of request fields a client must not set, because common backends and frameworks obey
# them: they would re-target the request (path, method) or let the client claim another origin.
# They are removed from every request; the proxy writes its own X-Forwarded-* (proxy.py).
UNTRUSTED = (
    # the client's claims about where it came from and what it addressed (Django, Rails, Spring,
    # ASP.NET, Express "trust proxy", Werkzeug ProxyFix)
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-prefix",
    b"x-forwarded-port", b"x-forwarded-server", b"x-forwarded-ssl", b"x-forwarded-scheme", b"x-url-scheme",
    b"front-end-https", b"forwarded", b"x-real-ip", b"x-client-ip", b"x-cluster-client-ip", b"true-client-ip",
    b"x-original-host", b"x-host",
)
# ...and those that re-target a request (IIS/ASP.NET, Symfony, Laminas: URL; Express method-override,
# Laravel, Rails, ASP.NET: method). Removing them is logged: a client sending them is probing.
RETARGETING = (b"x-original-url", b"x-rewrite-url", b"x-override-url", b"x-original-uri",
               b"x-http-method-override", b"x-http-method", b"x-method-override")
_KINDS = {**dict.fromkeys(HOP_BY_HOP, F_HOP), **dict.fromkeys(UNTRUSTED, F_UNTRUSTED),
          **dict.fromkeys(RETARGETING, F_RETARGET),
          b"host": F_HOST, b"content-length": F_LENGTH, b"transfer-encoding": F_TE, b"connection": F_CONNECTION,
          b"upgrade": F_UPGRADE, b"set-cookie": F_SET_COOKIE, b"expect": F_EXPECT,
          # response fields carrying a URL the prefix rule may map (services/http/rewrite.py)
          b"location": F_URL, b"content-location": F_URL, b"refresh": F_URL}
# what is not passed on: hop-by-hop fields (Connection, Transfer-Encoding and Upgrade are re-added
# where they apply) and, in requests, the client's claims and its Content-Length (re-added)
_DROP_RESPONSE = frozenset({F_HOP, F_CONNECTION, F_TE, F_UPGRADE})
_DROP_REQUEST = _DROP_RESPONSE | {F_UNTRUSTED, F_RETARGET, F_LENGTH, F_HOST}
MAX_CACHED_LINES = 4096
MAX_CACHED_LINE = 512
_lines: dict[bytes, tuple[int, bytes]] = {}


def _field(line: bytes) -> tuple[int, bytes] | None:
    """(kind, value) of a valid field line, None for an invalid one. Values of the fields framing
    reads are stripped and lower-cased; Upgrade's keeps its case; others are not needed."""
    if _LINE_OK.fullmatch(line) is None:
        return None
    name, _, value = line.partition(b":")
    kind = _KINDS.get(name.lower(), F_OTHER)
    v = b"" if kind == F_OTHER else value.strip(b" \t")
    f = (kind, v if kind == F_UPGRADE else v.lower())
    if len(line) <= MAX_CACHED_LINE:
        if len(_lines) >= MAX_CACHED_LINES:
            _lines.clear()
        _lines[line] = f
    return f


_FIELDS = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*\r\n")
_STATUS = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_METHODS_COMMON = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS"})
METHODS_REFUSED = frozenset({b"CONNECT", b"TRACE"})


class HttpError(Exception):
    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}")


@dataclass(slots=True)
class Head:
    """A parsed head. `block` holds the header fields as received, each line ending in CRLF.

    `host` is the Host field's value lower-cased; `cookies`: a response sets some; `urls`: it has
    a Location, Content-Location or Refresh field.
    `kept`: the fields a proxy passes on, each with its CRLF (see _DROP_REQUEST / _DROP_RESPONSE);
    `host_line`: the request's Host field line as received.
    """

    method: bytes
    target: bytes
    version: bytes
    block: bytes
    status: int = 0
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    upgrade: bytes | None = None
    host: bytes | None = None
    cookies: bool = False
    urls: bool = False
    kept: bytes = b""
    host_line: bytes = b""
    expect: bool = False  # Expect: 100-continue (the client waits for the go-ahead before its body)
    #: what the proxy removed that the client meant a backend to obey (for the log line)
    stripped: list[bytes] | None = None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """(name, value) pairs in order and original case."""
        return _FIELDS.findall(self.block)

    def get(self, name: bytes) -> bytes | None:
        for k, v in _FIELDS.findall(self.block):
            if k.lower() == name:
                return v
        return None


def _refuse_block(block: bytes) -> NoReturn:
    """The slow path: says exactly what is wrong with a header block the fast match refused."""
    if block.count(b"\n") != block.count(b"\r\n") or block.count(b"\r") != block.count(b"\r\n"):
        raise HttpError(400, "bare LF or CR in head")
    for line in block[:-2].split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            raise HttpError(400, "obsolete line folding")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise HttpError(400, "malformed header field")
        if _VALUE_BAD.search(value.strip(b" \t")):
            raise HttpError(400, "control character in header value")
    if block.count(b"\r\n") > MAX_HEADERS:
        raise HttpError(431, "too many header fields")
    raise HttpError(400, "malformed header block")


def _framing_py(h: Head, request: bool) -> None:
    """Splits, checks and classifies `h.block`, filling `h`: the reference for `_chead.framing`."""
    block = h.block
    lines = block[:-2].split(b"\r\n") if block else []
    if len(lines) > MAX_HEADERS:
        _refuse_block(block)
    drop = _DROP_REQUEST if request else _DROP_RESPONSE
    kept: list[bytes] = []
    te = cl = conn = upgrade = None
    hosts = 0
    get = _lines.get
    for line in lines:
        f = get(line) or _field(line)
        if f is None:
            _refuse_block(block)
        kind = f[0]
        if kind == F_OTHER:
            kept.append(line)
            continue
        if kind not in drop:
            kept.append(line)
        if kind == F_HOST:
            hosts += 1
            h.host = f[1]
            h.host_line = line
        elif kind == F_LENGTH:
            if cl is not None:
                raise HttpError(400 if request else 502, "malformed or repeated Content-Length")
            cl = f[1]
        elif kind == F_CONNECTION:
            conn = f[1] if conn is None else conn + b"," + f[1]
        elif kind == F_TE:
            te = f[1] if te is None else b"," + f[1]  # a second field is never just "chunked"
        elif kind == F_SET_COOKIE:
            h.cookies = True
        elif kind == F_URL:
            h.urls = True
        elif kind == F_UPGRADE and upgrade is None:
            upgrade = f[1]
        elif kind == F_EXPECT and request:
            if f[1] != b"100-continue":
                raise HttpError(417, "unknown expectation")  # RFC 9110 §10.1.1
            h.expect = True
        elif kind == F_RETARGET and request:
            h.stripped = (h.stripped or []) + [line.partition(b":")[0]]
    if kept:
        kept.append(b"")
        h.kept = b"\r\n".join(kept)
    if request and (hosts > 1 or (not hosts and h.version == b"HTTP/1.1")):
        raise HttpError(400, "exactly one Host header is required")
    if te is not None:
        if request and h.version == b"HTTP/1.0":
            raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")  # RFC 9112 §6.1: faulty framing
        if cl is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if te != b"chunked":
            raise HttpError(501 if request else 502, "unsupported Transfer-Encoding")
        h.chunked = True
    elif cl is not None:
        if not cl.isdigit() or len(cl) > 15:
            raise HttpError(400 if request else 502, "malformed or repeated Content-Length")
        h.content_length = int(cl)
    if conn is None:
        h.keep_alive = h.version != b"HTTP/1.0"
        return
    _connection(h, conn, upgrade)


def _connection(h: Head, conn: bytes, upgrade: bytes | None) -> None:
    """What the Connection field (lower-cased, several joined by ',') says: keep-alive, Upgrade, and
    the fields it names (shared with the C reader, which calls it for anything but one plain token)."""
    if conn == b"keep-alive" or conn == b"close":
        tokens = {conn}
    else:
        tokens = {t.strip(b" \t") for t in conn.split(b",")}
    h.keep_alive = (b"keep-alive" in tokens) if h.version == b"HTTP/1.0" else (b"close" not in tokens)
    if b"upgrade" in tokens:
        h.upgrade = upgrade
    named = tokens - _CONNECTION_OPTIONS
    if named and h.kept:  # RFC 9110 §7.6.1: fields the Connection field names are for this hop only
        h.kept = b"".join(line + b"\r\n" for line in h.kept.split(b"\r\n")[:-1]
                          if not _connection_named(line, named))


_CONNECTION_OPTIONS = frozenset({b"keep-alive", b"close", b"upgrade", b""})


def _connection_named(line: bytes, named: set[bytes]) -> bool:
    """Framing fields stay whatever Connection says: the proxy frames by them (a named Host or
    Content-Length is re-added or refused elsewhere)."""
    name = line.partition(b":")[0].lower()
    return name in named and _KINDS.get(name, F_OTHER) == F_OTHER


try:  # the C reader (services/http/_chead.c), equal to _framing_py (tests/services/http/test_chead.py)
    from services.http import _chead
except ImportError:
    _chead = None
if _chead is not None:
    _chead.configure(HttpError, _refuse_block, _connection, _KINDS, _DROP_REQUEST, _DROP_RESPONSE, MAX_HEADERS)
    _framing = _chead.framing
else:
    _framing = _framing_py


def parse_request_head(head: bytes) -> Head:
    """`head`: the request line and header fields up to and including the empty line."""
    n = len(head)
    i = head.find(b"\r\n")
    if n > MAX_HEAD:
        raise HttpError(414, "request line too long") if i > MAX_REQUEST_LINE else HttpError(
            431, "request head too large")
    if i < 0 or not head.endswith(b"\r\n\r\n"):
        raise HttpError(400, "incomplete head")
    line = head[:i]
    if i > MAX_REQUEST_LINE:
        raise HttpError(414, "request line too long")
    if b"\n" in line or b"\r" in line:
        raise HttpError(400, "bare LF or CR in head")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if method not in _METHODS_COMMON:
        if not _TOKEN.fullmatch(method):
            raise HttpError(400, "malformed method")
        if method in METHODS_REFUSED:
            raise HttpError(405, f"{method.decode()} is not allowed")
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        raise HttpError(505, "HTTP version not supported")
    if method == b"OPTIONS" and target == b"*":
        raise HttpError(400, "OPTIONS * is not allowed")
    h = Head(method, target, version, head[i + 2 : -2])
    _framing(h, True)
    if h.upgrade is not None:
        _check_upgrade(h)
    return h


_WS_KEY = re.compile(rb"[A-Za-z0-9+/]{21}[AQgw]==")  # base64 of 16 bytes (RFC 6455 §4.1)


def _check_upgrade(h: Head) -> None:
    """Only a WebSocket handshake may turn a request into a tunnel: one with a bad handshake is
    refused; any other protocol (h2c, ...) is stripped, so the request is served as plain HTTP and
    the connection can never become an unrouted tunnel (RFC 9110 §7.8 lets a server ignore Upgrade)."""
    if h.upgrade.lower() != b"websocket":  # type: ignore[union-attr]
        h.stripped = (h.stripped or []) + [b"Upgrade: " + h.upgrade]  # type: ignore[operator]
        h.upgrade = None
        return
    if h.method != b"GET" or h.version != b"HTTP/1.1":
        raise HttpError(400, "WebSocket upgrade needs GET and HTTP/1.1")
    key = h.get(b"sec-websocket-key")
    if key is None or _WS_KEY.fullmatch(key) is None:
        raise HttpError(400, "WebSocket upgrade without a valid Sec-WebSocket-Key")
    if h.get(b"sec-websocket-version") != b"13":
        raise HttpError(400, "WebSocket upgrade with a version other than 13")


def parse_response_head(head: bytes, request_method: bytes) -> Head:
    i = head.find(b"\r\n")
    if i < 0 or not head.endswith(b"\r\n\r\n"):
        raise HttpError(502, "upstream: incomplete head")
    m = _STATUS.fullmatch(head, 0, i)
    if m is None:
        raise HttpError(502, "upstream: bare LF or CR in head" if b"\n" in head[:i] or b"\r" in head[:i]
                        else "malformed status line from upstream")
    status = int(m[2])
    h = Head(b"", b"", b"HTTP/1.1" if m[1] == b"1" else b"HTTP/1.0", head[i + 2 : -2], status)
    try:
        _framing(h, False)
    except HttpError as exc:
        raise HttpError(502, f"upstream: {exc.reason}") from None
    if status < 200 or status == 204 or status == 304 or request_method == b"HEAD":
        h.content_length, h.chunked = 0, False
    return h


MAX_CHUNK_EXT = 256  # chunk extensions carry nothing we use; a long one is only a way to burn CPU/memory
# RFC 9112 §7.1.1: chunk-size [ chunk-ext ] with chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ),
# name = token, value = token / quoted-string (qdtext or quoted-pair; no CR, LF or other controls).
# BWS is refused too: no client needs it, and parsers disagree on it (h11 refuses it before `;`
# and accepts it after `;` and around `=`): a proxy accepts only what every reader frames alike.
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,15})((?:;[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
    rb"(?:=(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|\"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]"
    rb"|\\[\t \x21-\x7e\x80-\xff])*\"))?)*)")


def chunk_size(line: bytes, status: int) -> int:
    """The size of a chunk-size line (without its CRLF); HttpError(status) unless it is exactly the
    RFC 9112 grammar: a bare CR or LF, a malformed extension or one over MAX_CHUNK_EXT is refused."""
    m = _CHUNK_LINE.fullmatch(line)
    if m is None:
        if b"\r" in line or b"\n" in line:
            raise HttpError(status, "bare CR or LF in chunked framing")
        raise HttpError(status, "malformed chunk size or extension")
    if len(m[2]) > MAX_CHUNK_EXT:
        raise HttpError(status, "chunk extension too long")
    return int(m[1], 16)


def trailer_line(line: bytes, status: int) -> None:
    if _LINE_OK.fullmatch(line) is None:
        raise HttpError(status, "bare CR or LF in trailer" if b"\r" in line or b"\n" in line
                        else "malformed trailer field")
