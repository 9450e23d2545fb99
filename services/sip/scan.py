"""The relay's hot path: a one-pass scan of well-formed SIP messages — sans-IO.

`scan()` splits the header section once and looks only at the headers routing needs (Via,
Route, Max-Forwards, Call-ID, CSeq, To/From, Contact, Content-*); every other header stays the
line it came as and is forwarded verbatim. It accepts a strict subset of what `message.parse`
accepts, checking each header with the full parser's own validators (cached where values repeat
within a call). Anything unusual — folded or bare-LF lines, several Vias on one line, a missing
Content-Length, a duplicate — returns None: the caller then runs the full parser and scans its
normalised serialisation, so the strict grammar decides every odd case.
"""

from __future__ import annotations

import re
from functools import lru_cache

from services.sip.message import (
    MAX_MESSAGE,
    SipError,
    check_cseq,
    digits,
    parse_via,
    split_commas,
    valid_request_uri,
)
from services.sip.uri import UriError, parse_name_addr

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
#: lower-case header name (long and compact form) -> the key the scan files it under
_KEYS = {
    "via": "via", "v": "via", "route": "route", "record-route": "rr", "path": "path",
    "max-forwards": "mf", "call-id": "i", "i": "i", "cseq": "cseq", "content-length": "l", "l": "l",
    "to": "t", "t": "t", "from": "f", "f": "f", "contact": "m", "m": "m", "content-type": "c", "c": "c",
    "user-agent": "ua", "proxy-require": "pr",
}
_SINGLE = frozenset({"mf", "i", "cseq", "l", "t", "f"})
#: raw header name -> key ("" for headers we pass through); names are checked once, then cached
_names: dict[str, str] = {}
_NAMES_MAX = 4096


class Via:
    """One Via value: transport, host, port, the `;params` text and the value as received."""

    __slots__ = ("transport", "host", "port", "params", "raw", "_pd")

    def __init__(self, transport: str, host: str, port: int | None, params: str, raw: str):
        self.transport, self.host, self.port, self.params, self.raw = transport, host, port, params, raw
        self._pd: dict[str, str | None] | None = None

    def param_dict(self) -> dict[str, str | None]:
        """The parameters by lower-case name (shared: Via objects are cached with their line; copy to edit)."""
        if self._pd is None:
            self._pd = {}
            for p in self.params.split(";")[1:]:
                k, eq, v = p.partition("=")
                self._pd[k.strip().lower()] = v.strip() if eq else None
        return self._pd

    def sent_by(self) -> str:
        return f"SIP/2.0/{self.transport} {self.host}" + (f":{self.port}" if self.port else "")


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
        i = self.via_idx[0]
        rest = [v.raw for v, j in zip(self.vias[1:], self.via_idx[1:], strict=True) if j == i]
        values = ([value] if value is not None else []) + rest
        self.lines[i] = "Via: " + ", ".join(values) if values else ""

    def insert_before(self, idx: int, line: str) -> None:
        """Put `line` above header `idx` (above all headers when idx is -1)."""
        i = idx if idx >= 0 else 0
        self.lines[i] = line + "\r\n" + self.lines[i] if self.lines[i] else line

    def serialize(self) -> bytes:
        head = "\r\n".join([self.start, *[x for x in self.lines if x]])
        return (head + "\r\n\r\n").encode("latin-1") + self._body


#: header line -> (key, value): a line seen before is neither split nor checked again. Most lines
#: of a call repeat (From, To, Contact, CSeq...), many across calls; bounded, cleared when full.
_seen: dict[str, tuple[str, object]] = {}
_SEEN_MAX = 50_000
_MULTI = frozenset({"via", "route", "rr", "path", "m", "pr"})


def scan(data: bytes, datagram: bool = True) -> Sip | None:
    """The scanned message, or None when the full parser must decide (odd or broken input)."""
    text_end = data.find(b"\r\n\r\n")
    if text_end == -1 or len(data) > MAX_MESSAGE:
        return None
    head = data[:text_end].decode("latin-1")
    if head.count("\n") != head.count("\r\n"):
        return None  # bare LF line ends
    lines = head.split("\r\n")
    s = Sip()
    s.start = start = lines[0]
    s.lines = lines = lines[1:]
    if not lines:
        return None
    if start.startswith("SIP/"):
        m = _STATUS.fullmatch(start)
        if m is None:
            return None
        s.status = int(m.group(1))
    else:
        parts = start.split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[1] or not _TOKEN.fullmatch(parts[0]):
            return None
        s.method, s.uri = parts[0], parts[1]
        if not valid_request_uri(s.uri):
            return None
    single: dict[str, object] = {}
    multi: dict[str, list[int]] = {}
    s.vias = vias = []
    s.via_idx = via_idx = []
    for i, line in enumerate(lines):
        known = _seen.get(line)
        if known is None:
            known = _line(line)
            if known is None:
                return None
            if len(_seen) >= _SEEN_MAX:
                _seen.clear()
            _seen[line] = known
        key, value = known
        if not key:
            continue
        if key in _MULTI:
            at = multi.get(key)
            if at is None:
                multi[key] = [i]
            else:
                at.append(i)
            if key == "via":  # one line may carry several Via values (sipp and some PBXs join them)
                for via in value:  # type: ignore[attr-defined]
                    vias.append(via)
                    via_idx.append(i)
        elif key in single:
            return None  # a duplicate single-value header: the full parser names it
        else:
            single[key] = value
            if key == "l":
                s.cl_idx = i
            elif key == "mf":
                s.mf_idx = i
    if not vias or "t" not in single or "f" not in single or "i" not in single or "cseq" not in single:
        return None  # a mandatory header is missing: the full parser says which
    s.to, s.from_, s.call_id = single["t"], single["f"], single["i"]  # type: ignore[assignment]
    s.cseq, s.cseq_method = single["cseq"]  # type: ignore[misc]
    if s.method is not None and s.cseq_method != s.method and not (s.method == "ACK" and s.cseq_method == "INVITE"):
        return None  # CSeq method mismatch
    if "mf" in single:
        s.mf = single["mf"]  # type: ignore[assignment]
    s.ctype = single.get("c", "")  # type: ignore[assignment]
    s.ua = single.get("ua")  # type: ignore[assignment]
    s.route_idx = multi.get("route", [])
    s.contact_idx = multi.get("m", [])
    s.rr_idx = multi["rr"][0] if "rr" in multi else -1
    s.path_idx = multi["path"][0] if "path" in multi else -1
    if "pr" in multi:
        s.proxy_require = [lines[j].partition(":")[2].strip(" \t") for j in multi["pr"]]
    cl = single.get("l")
    if cl is None:
        return None
    n: int = cl  # type: ignore[assignment]
    body_start = text_end + 4
    if body_start + n > len(data) or (not datagram and body_start + n != len(data)):
        return None
    s._body = data[body_start:body_start + n]
    return s


def _line(line: str) -> tuple[str, object] | None:
    """(key, checked value) of a header line never seen before; None if it needs the full parser."""
    name, colon, value = line.partition(":")
    if not colon or line[:1] in (" ", "\t"):
        return None  # no colon, or a folded line
    name = name.rstrip(" \t")
    if not _TOKEN.fullmatch(name):
        return None
    key = _KEYS.get(name.lower(), "")
    if not key:
        return "", None
    if key == "via":
        parsed = [_via(v) for v in split_commas(value)]
        return None if None in parsed else (key, tuple(parsed))
    value = value.strip(" \t")
    if key in ("t", "f"):
        return (key, value) if _name_addr_ok(value) else None
    if key == "m":
        return (key, value) if all(p == "*" or _name_addr_ok(p) for p in split_commas(value)) else None
    if key == "mf":
        return (key, int(value)) if digits(value) and int(value) <= 255 else None
    if key == "l":
        return (key, int(value)) if digits(value) and len(value) <= 10 else None
    if key == "cseq":
        meth = check_cseq(value, None)
        return None if meth is None else (key, (value, meth))
    return key, value


def _via(value: str) -> Via | None:
    m = _VIA.fullmatch(value)
    if m is not None:
        port = m.group(3)
        if port is None or 0 < int(port) < 65536:
            return Via(m.group(1).upper(), m.group(2).lower(), int(port) if port else None, m.group(4), value)
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


@lru_cache(maxsize=8192)  # From/To values recur in every message of a call
def tag(value: str) -> str:
    """The tag parameter of a To/From value ("" without one)."""
    for p in value.split(";")[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "tag":
            return v.strip()
    return ""
