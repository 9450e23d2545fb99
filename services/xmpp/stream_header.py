"""Sans-IO peeker for the opening XMPP stream tag: finds the `to` domain a client asks for.

`peek_stream_header(buf)` is a pure function of the bytes received so far. It accepts an
optional UTF-8 BOM, an optional XML declaration, whitespace, then one start tag whose local name
is `stream` (any prefix), and returns:

- `NEED_MORE` while the tag is incomplete and the buffer is below the limit,
- `Header(to, default_ns, end)` once the closing `>` is seen (`end` is the offset after it),
- `Refusal(reason)` for anything else (garbage, DTDs, comments, other processing instructions,
  unknown entities, duplicate attributes, oversized prefix).

There is no DTD and no entity expansion beyond the five predefined entities and character
references, and no XML library: the grammar needed is tiny and attacker-controlled. Because the
result depends only on the bytes, feeding byte by byte yields the same answer as feeding at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PREFIX = 4096

_BOM = b"\xef\xbb\xbf"
_WS = b" \t\r\n"
_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_.:\-]*")
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "apos": "'", "quot": '"'}
_REF = re.compile(r"&(#x[0-9A-Fa-f]{1,6}|#[0-9]{1,7}|[A-Za-z]{2,4});")


@dataclass(frozen=True)
class Header:
    to: str | None
    default_ns: str | None
    end: int


@dataclass(frozen=True)
class Refusal:
    reason: str


class _NeedMore:
    def __repr__(self) -> str:
        return "NEED_MORE"


NEED_MORE = _NeedMore()
Result = Header | Refusal | _NeedMore


class _Incomplete(Exception):
    """The buffer ends inside the construct being read."""


class _Bad(Exception):
    """The bytes cannot start an XMPP stream; the message is the refusal reason."""


def peek_stream_header(buf: bytes, limit: int = MAX_PREFIX) -> Result:
    """Classify `buf` (everything the client sent so far); see the module docstring."""
    try:
        return _parse(buf[:limit])
    except _Incomplete:
        return Refusal("oversized") if len(buf) >= limit else NEED_MORE
    except _Bad as exc:
        return Refusal(str(exc))


def _parse(buf: bytes) -> Header:
    pos = len(_BOM) if buf.startswith(_BOM) else 0
    if len(buf) < len(_BOM) and _BOM.startswith(buf):
        raise _Incomplete
    pos = _skip_ws(buf, pos)
    if _startswith_partial(buf, pos, b"<?"):
        pos = _xml_declaration(buf, pos)
        pos = _skip_ws(buf, pos)
    _expect(buf, pos, b"<")
    name, pos = _name(buf, pos + 1)
    if name.rpartition(b":")[2] != b"stream":
        raise _Bad("not_stream")
    attrs, pos = _attributes(buf, pos)
    if buf[pos:pos + 1] == b"/":
        raise _Bad("empty_stream")
    _expect(buf, pos, b">")
    return Header(to=_domain(attrs.get("to")), default_ns=attrs.get("xmlns"), end=pos + 1)


def _skip_ws(buf: bytes, pos: int) -> int:
    while pos < len(buf) and buf[pos] in _WS:
        pos += 1
    if pos >= len(buf):
        raise _Incomplete
    return pos


def _startswith_partial(buf: bytes, pos: int, token: bytes) -> bool:
    """True if buf[pos:] starts with token; raise _Incomplete if it is a proper prefix of it."""
    rest = buf[pos:pos + len(token)]
    if rest == token:
        return True
    if token.startswith(rest):
        raise _Incomplete
    return False


def _expect(buf: bytes, pos: int, token: bytes) -> None:
    if not _startswith_partial(buf, pos, token):
        raise _Bad("garbage")


def _xml_declaration(buf: bytes, pos: int) -> int:
    """Skip `<?xml ...?>`; any other processing instruction is refused."""
    if not _startswith_partial(buf, pos, b"<?xml"):
        raise _Bad("processing_instruction")
    end = buf.find(b"?>", pos + 5)
    if end < 0:
        if b"<" in buf[pos + 5:] or b">" in buf[pos + 5:]:
            raise _Bad("bad_declaration")
        raise _Incomplete
    body = buf[pos + 5:end]
    if body[:1] not in (b" ", b"\t", b"\r", b"\n") or b"<" in body or b">" in body:
        raise _Bad("bad_declaration")
    return end + 2


def _name(buf: bytes, pos: int) -> tuple[bytes, int]:
    m = _NAME.match(buf, pos)
    if m is None:
        if pos >= len(buf):
            raise _Incomplete
        raise _Bad("garbage")
    if m.end() >= len(buf):
        raise _Incomplete  # the name may continue
    return m.group(), m.end()


def _attributes(buf: bytes, pos: int) -> tuple[dict[str, str], int]:
    attrs: dict[str, str] = {}
    while True:
        start = pos
        pos = _skip_ws(buf, pos)
        if buf[pos] in b">/":
            return attrs, pos
        if pos == start:
            raise _Bad("garbage")  # attributes must be separated by whitespace
        name, pos = _name(buf, pos)
        pos = _skip_ws(buf, pos)
        _expect(buf, pos, b"=")
        pos = _skip_ws(buf, pos + 1)
        quote = buf[pos:pos + 1]
        if quote not in (b"'", b'"'):
            raise _Bad("garbage")
        end = buf.find(quote, pos + 1)
        raw = buf[pos + 1:] if end < 0 else buf[pos + 1:end]
        if b"<" in raw:
            raise _Bad("garbage")
        if end < 0:
            raise _Incomplete
        key = name.decode("ascii")
        if key in attrs:
            raise _Bad("duplicate_attribute")
        attrs[key] = _unescape(raw)
        pos = end + 1


def _unescape(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("bad_utf8") from None
    out, last = [], 0
    for m in _REF.finditer(text):
        out.append(text[last:m.start()])
        out.append(_reference(m.group(1)))
        last = m.end()
    tail = text[last:]
    if "&" in tail or any("&" in part for part in out[::2]):
        raise _Bad("bad_entity")
    out.append(tail)
    return "".join(out)


def _reference(ref: str) -> str:
    if ref.startswith("#"):
        code = int(ref[2:], 16) if ref[1:2] == "x" else int(ref[1:])
        if code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0x10FFFF and not (
            0xFFFE <= code <= 0xFFFF
        ):
            return chr(code)
        raise _Bad("bad_char_ref")
    if ref not in _ENTITIES:
        raise _Bad("bad_entity")
    return _ENTITIES[ref]


def _domain(to: str | None) -> str | None:
    """The domain part of `to`, lower-cased, without a trailing dot (clients send a bare domain)."""
    if to is None:
        return None
    domain = to.rpartition("@")[2].partition("/")[0].strip().rstrip(".").lower()
    return domain or None
