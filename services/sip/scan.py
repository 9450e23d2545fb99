"""The relay's hot path: a one-pass scan of well-formed SIP messages — sans-IO.

`scan()` splits the header section once and looks only at the headers routing needs (Via,
Route, Max-Forwards, Call-ID, CSeq, To/From, Contact, Content-*); every other header stays the
line it came as and is forwarded verbatim. It accepts a strict subset of what `message.parse`
accepts, checking each header with the full parser's own validators. Anything unusual — folded
or bare-LF lines, a missing Content-Length, a duplicate — returns None: the caller then runs the
full parser and scans its normalised serialisation, so the strict grammar decides every odd case.

Written twice: `scan_py` here is the reference; `_cscan.c` (used when built) reads the common
shapes of the routing headers in C and asks `_line_cached` here for every other line, so both
return the same for every input (tests/services/sip/test_cscan.py).
"""

from __future__ import annotations

import re
from functools import lru_cache

from services.sip.lru import Lru
from services.sip.message import (
    MAX_MESSAGE,
    SipError,
    check_cseq,
    digits,
    parse_via,
    split_commas,
    valid_request_uri,
)
from services.sip.uri import UriError, parse_name_addr, split_params

_STATUS = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?", re.S)
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
#: The common Via shape; a value it does not fit is checked by `parse_via` instead.
_VIA = re.compile(r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+)(?::([0-9]{1,5}))?"
                  r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^;\s,\"]+)?)*)")
_T = r"[A-Za-z0-9\-.!%*_+`'~]+"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: The common To/From/Contact shape (`["x"|x y] <sip:user@host:port;p=v>;tag=t`); a value it does
#: not fit is checked by `parse_name_addr` instead. Every match is accepted by that parser.
_NAME_ADDR = re.compile(
    rf'(?:"[^"\\\r\n]*" ?|(?:{_T} )*)<sips?:(?:[A-Za-z0-9\-_.!~*\'()%&=+$,/:]+@)?[A-Za-z0-9\-.]+(?::{_PORT})?'
    rf"(?:;{_T}(?:={_T})?)*>(?:;{_T}(?:={_T})?)*")
#: Slots a header line is filed under: single-value headers first (a duplicate sends the message
#: to the full parser), then the multi-value ones, then everything passed through unread.
T, F, CALL_ID, CSEQ, MF, CL, CTYPE, UA, N_SINGLE = range(9)
VIA, ROUTE, RR, PATH, CONTACT, PR, PASS = range(N_SINGLE, N_SINGLE + 7)
#: lower-case header name (long and compact form) -> its slot
_KEYS = {
    "via": VIA, "v": VIA, "route": ROUTE, "record-route": RR, "path": PATH,
    "max-forwards": MF, "call-id": CALL_ID, "i": CALL_ID, "cseq": CSEQ, "content-length": CL, "l": CL,
    "to": T, "t": T, "from": F, "f": F, "contact": CONTACT, "m": CONTACT, "content-type": CTYPE, "c": CTYPE,
    "user-agent": UA, "proxy-require": PR,
}
#: the same by the exact names phones and PBXs write (valid tokens): no token check, no lower()
_EXACT = _KEYS | {
    "Via": VIA, "Route": ROUTE, "Record-Route": RR, "Path": PATH, "Max-Forwards": MF, "Call-ID": CALL_ID,
    "Call-Id": CALL_ID, "CSeq": CSEQ, "Content-Length": CL, "To": T, "From": F, "Contact": CONTACT,
    "Content-Type": CTYPE, "User-Agent": UA, "Proxy-Require": PR, "v": VIA, "i": CALL_ID, "l": CL,
    "t": T, "f": F, "m": CONTACT, "c": CTYPE,
}


class Via:
    """One Via value: transport, host, port, the `;params` text and the value as received.
    Never edited: the Python reader caches it with its header line, shared between messages."""

    __slots__ = ("transport", "host", "port", "params", "raw", "sent_by", "_pd")  # as _cscan.c writes them

    def __init__(self, transport: str, host: str, port: int | None, params: str, raw: str):
        self.transport, self.host, self.port, self.params, self.raw = transport, host, port, params, raw
        #: "SIP/2.0/<TRANSPORT> <host>[:port]", normalised: the key of the branch we derive
        self.sent_by = f"SIP/2.0/{transport} {host}" + (f":{port}" if port else "")
        self._pd: dict[str, str | None] | None = None

    @property
    def hostport(self) -> str:
        """As loop detection compares it with our own addresses (`Local.hostport`)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def param_dict(self) -> dict[str, str | None]:
        """The parameters by lower-case name (shared: Via objects are cached with their line; copy to edit)."""
        if self._pd is None:
            self._pd = {}
            for p in self.params.split(";")[1:]:
                k, eq, v = p.partition("=")
                self._pd[k.strip().lower()] = v.strip() if eq else None
        return self._pd


class Sip:
    """A scanned message: its header lines (text), where the interesting ones are, and the body.

    Edits work on `lines` in place ("" marks a removed line); `serialize()` joins them again.
    `vias[k]` sits on line `via_idx[k]` (several values may share a line). Class attributes are
    the defaults: a message is made per datagram, and most fields keep them.
    """

    method: str | None = None
    uri = ""
    status = 0
    start = ""
    lines: list[str]
    _body = b""
    vias: list[Via]
    via_idx: list[int]
    route_idx: list[int]
    contact_idx: list[int]
    rr_idx = -1
    path_idx = -1
    mf: int | None = None
    mf_idx = -1
    cl_idx = -1
    call_id = ""
    cseq = ""
    cseq_method = ""
    to = ""
    from_ = ""
    ctype = ""
    ua: str | None = None
    proxy_require: list[str] = []  # noqa: RUF012 # never mutated: scan assigns a new list

    @property
    def is_request(self) -> bool:
        return self.method is not None

    @property
    def body(self) -> bytes:
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:  # a rewritten SDP: Content-Length follows
        self._body = value
        self.lines[self.cl_idx] = f"Content-Length: {len(value)}"

    def set_top_via(self, value: str | None) -> None:
        """Replace the first Via value (None: remove it), keeping others on its line."""
        idx = self.via_idx
        i = idx[0]
        if len(idx) < 2 or idx[1] != i:  # the common case: alone on its line
            self.lines[i] = "" if value is None else "Via: " + value
            return
        n = 2  # the values on line i come first, and in order
        while n < len(idx) and idx[n] == i:
            n += 1
        vias = self.vias
        rest = vias[1].raw if n == 2 else ", ".join([vias[j].raw for j in range(1, n)])
        self.lines[i] = "Via: " + rest if value is None else "Via: " + value + ", " + rest

    def insert_before(self, idx: int, line: str) -> None:
        """Put `line` above header `idx` (above all headers when idx is -1)."""
        i = idx if idx >= 0 else 0
        self.lines[i] = line + "\r\n" + self.lines[i] if self.lines[i] else line

    def serialize(self) -> bytes:
        return _serialize(self.start, self.lines, self._body)


def serialize_py(start: str, lines: list[str], body: bytes) -> bytes:
    head = start + "\r\n" + "\r\n".join(filter(None, lines)) + "\r\n\r\n"  # "": removed
    return head.encode("latin-1") + body


#: header line -> (slot, checked value): a line seen before is neither split nor checked again.
#: Most lines of a call repeat (From, To, Contact, CSeq...), many across calls; a bounded LRU
#: (`Lru`): lines a flood invents evict only the least recently used, not the calls in flight.
#: With the C scanner built, only the lines it leaves to Python come here.
#: Small on purpose: the lines of the calls in flight fit, and the relay's cost follows its memory
#: footprint more than this hit rate. Against 50,000 lines, under sipp at 1,500 CPS: the cycle
#: collector's time per message 0.9 -> 0.2 µs (it walked the cached values), half the page faults,
#: Python time per message equal or lower in three paired runs.
_SEEN_MAX = 4096
_seen: Lru[str, tuple[int, object]] = Lru(_SEEN_MAX)
#: start line -> (method or None, Request-URI, status): the same few recur in every call
_STARTS_MAX = 4096
_starts: Lru[str, tuple[str | None, str, int]] = Lru(_STARTS_MAX)


def scan_py(data: bytes, datagram: bool = True) -> Sip | None:
    """The scanned message, or None when the full parser must decide (odd or broken input).
    The reference for the C scanner (`_cscan.scan`, used when built), and the fallback without it."""
    text_end = data.find(b"\r\n\r\n")
    if text_end == -1 or len(data) > MAX_MESSAGE:
        return None
    lines = data[:text_end].decode("latin-1").split("\r\n")
    if len(lines) < 2:
        return None
    start = lines[0]
    first = _starts.hit(start)
    if first is None:
        first = _start(start)
        if first is None:
            return None
        _starts.put(start, first)
    del lines[0]
    s = Sip()
    s.start = start
    s.method, s.uri, s.status = first
    s.lines = lines
    s.vias = vias = []
    s.via_idx = via_idx = []
    s.route_idx = route_idx = []
    s.contact_idx = contact_idx = []
    single: list[object] = [None] * N_SINGLE
    pr: list[int] | None = None
    for i, line in enumerate(lines):
        known = _line_cached(line)
        if known is None:
            return None
        k, value = known
        if k < N_SINGLE:
            if single[k] is not None:
                return None  # a duplicate single-value header: the full parser names it
            single[k] = value
            if k == CL:
                s.cl_idx = i
            elif k == MF:
                s.mf_idx = i
        elif k == VIA:  # one line may carry several Via values (sipp and some PBXs join them)
            for via in value:  # type: ignore[attr-defined]
                vias.append(via)
                via_idx.append(i)
        elif k == PASS:
            continue
        elif k == ROUTE:
            route_idx.append(i)
        elif k == CONTACT:
            contact_idx.append(i)
        elif k == RR:
            if s.rr_idx < 0:
                s.rr_idx = i
        elif k == PATH:
            if s.path_idx < 0:
                s.path_idx = i
        elif pr is None:
            pr = [i]
        else:
            pr.append(i)
    to, from_, call_id, cseq, mf, cl, ctype, ua = single
    if not vias or to is None or from_ is None or call_id is None or cseq is None or cl is None:
        return None  # a mandatory header is missing: the full parser says which
    s.to, s.from_, s.call_id = to, from_, call_id  # type: ignore[assignment]
    s.cseq, s.cseq_method = cseq  # type: ignore[misc]
    if s.method is not None and s.cseq_method != s.method and not (s.method == "ACK" and s.cseq_method == "INVITE"):
        return None  # CSeq method mismatch
    if mf is not None:
        s.mf = mf  # type: ignore[assignment]
    if ctype is not None:
        s.ctype = ctype  # type: ignore[assignment]
    if ua is not None:
        s.ua = ua  # type: ignore[assignment]
    if pr is not None:
        s.proxy_require = [lines[j].partition(":")[2].strip(" \t") for j in pr]
    n: int = cl  # type: ignore[assignment]
    body_start = text_end + 4
    if body_start + n > len(data) or (not datagram and body_start + n != len(data)):
        return None
    if n:
        s._body = data[body_start:body_start + n]
    return s


def _line_cached(line: str) -> tuple[int, object] | None:
    """`_line`, remembered: the C scanner asks for the lines it does not read itself."""
    known = _seen.hit(line)
    if known is None:
        known = _line(line)
        if known is None:  # bare-LF lines never reach the cache: `_line` refuses them
            return None
        _seen.put(line, known)
    return known


def _start(line: str) -> tuple[str | None, str, int] | None:
    """(method, Request-URI, 0) of a request line, (None, "", status) of a status line; None if odd."""
    if "\n" in line:
        return None  # a bare LF: the full parser splits there
    if line.startswith("SIP/"):
        m = _STATUS.fullmatch(line)
        return None if m is None else (None, "", int(m.group(1)))
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[1] or not _TOKEN.fullmatch(parts[0]):
        return None
    if not valid_request_uri(parts[1]):
        return None
    return parts[0], parts[1], 0


def _line(line: str) -> tuple[int, object] | None:
    """(slot, checked value) of a header line never seen before; None if it needs the full parser."""
    name, colon, value = line.partition(":")
    if not colon or "\n" in line:
        return None  # no colon, or a bare LF inside
    key = _EXACT.get(name)
    if key is None:
        if line[:1] in (" ", "\t"):
            return None  # a folded line
        name = name.rstrip(" \t")
        if not _TOKEN.fullmatch(name):
            return None
        key = _KEYS.get(name.lower(), PASS)
        if key == PASS:
            return PASS, None
    if key == VIA:
        if "," not in value:
            via = _via(value.strip())
            return None if via is None else (VIA, (via,))
        vias = []
        for part in split_commas(value):
            via = _via(part)
            if via is None:
                return None
            vias.append(via)
        return VIA, tuple(vias)
    value = value.strip(" \t")
    if key == T or key == F:
        return (key, value) if _name_addr_ok(value) else None
    if key == CONTACT:
        return (key, value) if all(p == "*" or _name_addr_ok(p) for p in split_commas(value)) else None
    if key == MF:
        return (key, int(value)) if digits(value) and int(value) <= 255 else None
    if key == CL:
        return (key, int(value)) if digits(value) and len(value) <= 10 else None
    if key == CSEQ:
        meth = check_cseq(value, None)
        return None if meth is None else (key, (value, meth))
    return key, value


def _via(value: str) -> Via | None:
    m = _VIA.fullmatch(value)
    if m is not None:
        transport, host, port, params = m.groups()
        if port is None:
            return Via(transport.upper(), host.lower(), None, params, value)
        if 0 < int(port) < 65536:
            return Via(transport.upper(), host.lower(), int(port), params, value)
    try:
        v = parse_via(value)
    except SipError:
        return None
    params = "".join(f";{k}" if x is None else f";{k}={x}" for k, x in v.params.items())
    return Via(v.transport, v.host, v.port, params, value)


def _name_addr_ok(value: str) -> bool:
    if _NAME_ADDR.fullmatch(value) is not None:
        return True
    try:
        parse_name_addr(value)
    except UriError:
        return False
    return True


def tag(value: str) -> str:
    """The tag parameter of a To/From value ("" without one)."""
    i = value.find(";")
    if i < 0:
        return ""
    if value.startswith(";tag=", i) and '"' not in value[:i]:  # the usual shape: tag is the first parameter
        j = value.find(";", i + 5)
        return (value[i + 5:] if j < 0 else value[i + 5:j]).strip()
    return _tag_general(value)


@lru_cache(maxsize=1024)
def _tag_general(value: str) -> str:
    for p in split_params(value)[1:]:  # a ";tag=" inside quotes (display name, a value) is none
        k, _, v = p.partition("=")
        if k.strip().lower() == "tag":
            return v.strip()
    return ""


try:
    from services.sip import _cscan  # type: ignore[attr-defined]
except ImportError:  # not built (a source tree without `make venv`): the Python scanner
    _cscan = None
if _cscan is not None:
    _cscan.configure(Sip, Via, _line_cached, valid_request_uri, MAX_MESSAGE)
    scan = _cscan.scan
    _serialize = _cscan.serialize
    SCANNER = "c"
else:
    scan = scan_py
    _serialize = serialize_py
    SCANNER = "python"
