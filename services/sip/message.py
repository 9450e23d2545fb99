"""Sans-IO SIP message parsing and serialisation (RFC 3261 §7, §20, §25).

Tolerant where the RFC says so (compact header names, case, LWS and line folding, several
values on one line), strict where a proxy must be (Content-Length framing, mandatory headers,
scalar ranges, duplicated single-value headers). Bytes are decoded as latin-1 so that every
octet (NUL, UTF-8) survives a parse -> serialise round trip unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from services.sip.uri import UriError, parse_name_addr, parse_uri

#: Largest message accepted (RFC 3261 has no limit; 64 KiB is the UDP maximum and plenty for SIP).
MAX_MESSAGE = 65535

COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "o": "Event", "r": "Refer-To", "u": "Allow-Events", "b": "Referred-By", "x": "Session-Expires",
}
_CANON = {n.lower(): n for n in COMPACT.values()} | {
    n.lower(): n for n in (
        "CSeq", "Max-Forwards", "Route", "Record-Route", "Path", "Proxy-Require", "Require",
        "User-Agent", "Expires", "WWW-Authenticate", "Authorization", "Unsupported",
    )
}
#: Headers whose comma-separated values are kept as separate entries (we pop/insert single ones).
MULTI = frozenset({"Via", "Route", "Record-Route", "Path"})
SINGLE = ("To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length")
MANDATORY = ("Via", "To", "From", "Call-ID", "CSeq")
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_STATUS = re.compile(r"^SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?$", re.S)
_VIA = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+([^;\s]+)\s*(;.*)?$", re.S)


class SipError(Exception):
    """Malformed message (the remote's fault); `status` is the response a request deserves."""

    def __init__(self, status: int, reason: str, partial: Message | None = None):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.partial = partial


@dataclass
class Message:
    method: str | None = None
    uri: str = ""
    status: int = 0
    reason: str = ""
    headers: list[list[str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        for h in self.headers:
            if h[0] == name:
                return h[1]
        return None

    def all(self, name: str) -> list[str]:
        return [h[1] for h in self.headers if h[0] == name]

    def remove(self, name: str) -> None:
        self.headers = [h for h in self.headers if h[0] != name]

    def set(self, name: str, value: str) -> None:
        for h in self.headers:
            if h[0] == name:
                h[1] = value
                return
        self.headers.append([name, value])

    def insert(self, name: str, value: str) -> None:
        """Insert as first value of `name` (above existing ones), or first header overall."""
        for i, h in enumerate(self.headers):
            if h[0] == name:
                self.headers.insert(i, [name, value])
                return
        self.headers.insert(0, [name, value])

    def pop_first(self, name: str) -> str | None:
        for i, h in enumerate(self.headers):
            if h[0] == name:
                return self.headers.pop(i)[1]
        return None

    def cseq(self) -> tuple[int, str]:
        num, _, meth = (self.get("CSeq") or "").strip().partition(" ")
        return int(num), meth.strip()

    def serialize(self) -> bytes:
        start = f"{self.method} {self.uri} SIP/2.0" if self.method else f"SIP/2.0 {self.status} {self.reason}"
        lines = [start]
        lines += [f"{n}: {v}" for n, v in self.headers if n != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


def canonical(name: str) -> str:
    low = name.lower()
    if low in COMPACT:
        return COMPACT[low]
    return _CANON.get(low, name)


def split_commas(value: str) -> list[str]:
    """Split a header value at commas outside quotes and <> (RFC 3261 §7.3.1)."""
    if "," not in value:  # the common case, kept cheap
        return [value.strip()]
    if '"' not in value:  # no quotes: only <...> protects commas, found with str.find
        return _split_unquoted(value)
    out: list[str] = []
    cur: list[str] = []
    quote, angle, esc = False, False, False
    for ch in value:
        if esc:
            esc = False
        elif quote and ch == "\\":
            esc = True
        elif ch == '"':
            quote = not quote
        elif not quote and ch == "<":
            angle = True
        elif not quote and ch == ">":
            angle = False
        elif ch == "," and not quote and not angle:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def _split_unquoted(value: str) -> list[str]:
    out: list[str] = []
    start = i = 0
    while True:
        comma, lt = value.find(",", i), value.find("<", i)
        if lt != -1 and (comma == -1 or lt < comma):
            gt = value.find(">", lt)
            if gt == -1:
                break  # an unclosed < protects everything after it
            i = gt + 1
            continue
        if comma == -1:
            break
        out.append(value[start:comma].strip())
        start = i = comma + 1
    out.append(value[start:].strip())
    return out


def header_end(data: bytes | bytearray) -> tuple[int, int]:
    """(index of the blank line, its length) or (-1, 0) while the header section is incomplete."""
    i = data.find(b"\r\n\r\n")
    j = data.find(b"\n\n")
    if j != -1 and (i == -1 or j < i):
        return j, 2
    return (i, 4) if i != -1 else (-1, 0)


def head_of(head: bytes | bytearray) -> Message | None:
    """The start line and whole header lines of `head` (a message too large or badly framed to
    be read whole), enough to answer it (RFC 3261 §8.2.6); None if they do not parse."""
    text = bytes(head).decode("latin-1")
    lines = text.replace("\r\n", "\n").split("\n")
    msg = Message()
    try:
        _start_line(msg, lines[0])
        _headers(msg, [line for line in lines[1:] if line])
    except SipError:
        return None
    return msg if msg.method is not None and all(msg.get(h) for h in MANDATORY) else None


def parse(data: bytes, *, datagram: bool = True) -> Message:
    """Parse one whole message; on a datagram trailing octets beyond Content-Length are dropped."""
    if len(data) > MAX_MESSAGE:
        raise SipError(513, "Message Too Large")
    end, sep = header_end(data)
    if end == -1:
        if not datagram:
            raise SipError(400, "Incomplete Header Section")
        head, rest = data.rstrip(b"\r\n"), b""  # a datagram ends the headers (RFC 4475 baddn)
    else:
        head, rest = data[:end], data[end + sep:]
    text = head.decode("latin-1")
    lines = text.replace("\r\n", "\n").split("\n")
    msg = Message()
    try:
        _start_line(msg, lines[0])
    except SipError as exc:
        if msg.method:  # a bad request line still gets a response when its headers allow one
            try:
                _headers(msg, lines[1:])
            except SipError:
                pass
            exc.partial = msg
        raise
    _headers(msg, lines[1:])
    _body(msg, rest, datagram)
    _validate(msg)
    return msg


def _start_line(msg: Message, line: str) -> None:
    if line.startswith("SIP/"):
        m = _STATUS.match(line) or _STATUS.match(line + " ")
        if not m:
            raise SipError(400, "Bad Status Line")
        msg.status, msg.reason = int(m.group(1)), (m.group(2) or "")
        return
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        if _TOKEN.match(parts[0]):
            msg.method = parts[0]
        raise SipError(400, "Bad Request Line")
    method, uri, version = parts
    if not _TOKEN.match(method):
        raise SipError(400, "Bad Method")
    msg.method, msg.uri = method, uri
    if version != "SIP/2.0":
        raise SipError(505, "Version Not Supported", msg)


def _headers(msg: Message, lines: list[str]) -> None:
    unfolded: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and unfolded:
            unfolded[-1] += " " + line.strip()
        else:
            unfolded.append(line)
    for line in unfolded:
        name, colon, value = line.partition(":")
        name = name.strip(" \t")
        if not colon or not _TOKEN.match(name):
            raise SipError(400, "Bad Header Line", msg)
        name = canonical(name)
        value = value.strip(" \t")
        if name in MULTI:
            for part in split_commas(value):
                msg.headers.append([name, part])
        else:
            msg.headers.append([name, value])


def _body(msg: Message, rest: bytes, datagram: bool) -> None:
    cls = msg.all("Content-Length")
    if len(cls) > 1:
        raise SipError(400, "Multiple Content-Length", msg)
    if not cls:
        if not datagram:
            raise SipError(400, "Missing Content-Length", msg)
        msg.body = rest  # RFC 3261 §18.3: on UDP the body is the rest of the datagram
        return
    if not digits(cls[0]) or len(cls[0]) > 10:
        raise SipError(400, "Bad Content-Length", msg)
    n = int(cls[0])
    if n > len(rest):
        raise SipError(400, "Content-Length Larger Than Message", msg)
    msg.body = rest[:n]


def _validate(msg: Message) -> None:
    for name in MANDATORY:
        if msg.get(name) is None:
            raise SipError(400, f"Missing {name}", msg)
    for name in SINGLE:
        if len(msg.all(name)) > 1:
            raise SipError(400, f"Duplicate {name}", msg)
    _check_cseq(msg)
    for via in msg.all("Via"):
        parse_via(via, msg)
    for name in ("To", "From"):
        _check_addr(msg, msg.get(name) or "", name)
    for value in msg.all("Contact"):
        for part in split_commas(value):
            if part != "*":
                _check_addr(msg, part, "Contact")
    if msg.is_request:
        _check_request(msg)


def digits(s: str) -> bool:
    """ASCII digits only (str.isdigit() also takes "²", which int() refuses)."""
    return s.isascii() and s.isdigit()


def check_cseq(value: str, method: str | None) -> str | None:
    """The CSeq method if `value` is a valid CSeq for a request `method` (None: a response)."""
    num, _, meth = value.strip().partition(" ")
    meth = meth.strip()
    if not digits(num) or len(num) > 10 or int(num) > 2**32 - 1 or not _TOKEN.match(meth or "-"):
        return None
    if method is not None and meth != method and not (method == "ACK" and meth == "INVITE"):
        return None
    return meth


def _check_cseq(msg: Message) -> None:
    value = msg.get("CSeq") or ""
    if check_cseq(value, None) is None:
        raise SipError(400, "Bad CSeq", msg)
    if check_cseq(value, msg.method) is None:
        raise SipError(400, "CSeq Method Mismatch", msg)


def request_uri_error(text: str) -> tuple[int, str] | None:
    """The response a Request-URI deserves, or None when it is fine."""
    if "<" in text or ">" in text:
        return 400, "Bad Request-URI"
    scheme = text.partition(":")[0].lower()
    if scheme not in ("sip", "sips"):
        return 416, "Unsupported URI Scheme"
    try:
        uri = parse_uri(text)
    except UriError as exc:
        return 400, f"Bad Request-URI: {exc}"
    if uri.headers:
        return 400, "Headers In Request-URI"
    return None


@lru_cache(maxsize=8192)  # the same few Request-URIs recur in every call
def valid_request_uri(text: str) -> bool:
    return request_uri_error(text) is None


def _check_request(msg: Message) -> None:
    mf = msg.get("Max-Forwards")
    if mf is not None and (not digits(mf) or int(mf) > 255):
        raise SipError(400, "Bad Max-Forwards", msg)
    err = request_uri_error(msg.uri)
    if err is not None:
        raise SipError(*err, msg)


def _check_addr(msg: Message, value: str, name: str) -> None:
    try:
        parse_name_addr(value)
    except UriError as exc:
        raise SipError(400, f"Bad {name}: {exc}", msg) from None


@dataclass
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    def __str__(self) -> str:
        hp = f"{self.host}:{self.port}" if self.port else self.host
        ps = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return f"SIP/2.0/{self.transport} {hp}{ps}"


def parse_via(value: str, msg: Message | None = None) -> Via:
    m = _VIA.match(value)
    if not m:
        raise SipError(400, "Bad Via", msg)
    host, port = _host_port(m.group(2))
    if host is None:
        raise SipError(400, "Bad Via", msg)
    params: dict[str, str | None] = {}
    for p in (m.group(3) or "").split(";")[1:]:
        k, eq, v = p.partition("=")
        k = k.strip()
        if not _TOKEN.match(k) or (eq and not v.strip()):
            raise SipError(400, "Bad Via Parameter", msg)
        params[k.lower()] = v.strip() if eq else None
    return Via(m.group(1).upper(), host, port, params)


def _host_port(s: str) -> tuple[str | None, int | None]:
    if s.startswith("["):
        host, _, rest = s[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_s = s.partition(":")
    if not host or (port_s and (not digits(port_s) or not 0 < int(port_s) < 65536)):
        return None, None
    return host.lower(), int(port_s) if port_s else None


def response(req: Message, status: int, reason: str, to_tag: str | None = None) -> Message:
    """A response to `req` (RFC 3261 §8.2.6): Via, From, To, Call-ID, CSeq copied."""
    resp = Message(status=status, reason=reason)
    for h in req.headers:
        if h[0] in ("Via", "From", "To", "Call-ID", "CSeq"):
            value = h[1]
            if h[0] == "To" and to_tag and ";tag=" not in value.replace(" ", ""):
                value += f";tag={to_tag}"
            resp.headers.append([h[0], value])
    return resp
