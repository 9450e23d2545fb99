"""The one canonical-path function: it decides routing/allow AND yields the path forwarded. Sans-IO.

A request target is accepted only when its raw path is already canonical, so that the proxy and
every common backend see the same path: what we route on is exactly what the backend serves.
Refused (400): dot segments, raw or percent-encoded; an encoded `/` or `\\`; a raw `\\`; empty
segments (`//`); `;` path parameters; NUL, controls, spaces; percent-escapes of characters that
need no escaping (`%41`), `%25` (double encoding), malformed escapes, and escapes that are
not valid shortest-form UTF-8.
"""

from __future__ import annotations

import re
import string

MAX_TARGET = 8192  # longer request lines are answered 414 before we get here


class BadPath(ValueError):
    """The request target is not a canonical origin-form path."""


_UNRESERVED = frozenset((string.ascii_letters + string.digits + "-._~").encode())
# RFC 3986 pchar minus ";" (path parameters are refused) plus "/" as separator
_RAW_OK = _UNRESERVED | frozenset(b"!$&'()*+,=:@/")
_HEX = frozenset(b"0123456789ABCDEFabcdef")
# Most paths have no escapes, dots after a slash or empty segments: one match proves them canonical.
_PLAIN = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,=:@/]*")
_QUERY_BAD = re.compile(rb"[\x00-\x20\x7f#]")
_PLAIN_TARGET = re.compile(rb"(/[A-Za-z0-9\-._~!$&'()*+,=:@/]*)(\?[^\x00-\x20\x7f#]*)?")


def split_target(target: bytes) -> tuple[str, str]:
    """-> (canonical path, query including its leading '?', or ''). Raises BadPath."""
    m = _PLAIN_TARGET.fullmatch(target)
    if m is not None:  # the usual target: proven canonical by one match and two substring checks
        path, query = m.groups()
        if b"//" not in path and b"/." not in path:
            return path.decode("ascii"), query.decode("latin-1") if query else ""
    if not target.startswith(b"/"):
        raise BadPath("not an origin-form target")  # absolute-form, authority-form, '*'
    path, q, query = target.partition(b"?")
    if q and _QUERY_BAD.search(query):
        raise BadPath("control, space or '#' in query")
    return canonical_path(path), ("?" + query.decode("latin-1")) if q else ""


def canonical_path(path: bytes) -> str:
    if not path.startswith(b"/"):
        raise BadPath("path must start with /")
    if _PLAIN.fullmatch(path) and b"//" not in path and b"/." not in path:
        return path.decode("ascii")
    i, n = 0, len(path)
    decoded = bytearray()
    while i < n:
        c = path[i]
        if c == 0x25:  # '%'
            if i + 2 >= n or path[i + 1] not in _HEX or path[i + 2] not in _HEX:
                raise BadPath("malformed percent-escape")
            b = int(path[i + 1 : i + 3], 16)
            if b in _UNRESERVED or b in (0x2F, 0x5C, 0x25) or b < 0x20 or b == 0x7F:
                raise BadPath("needless or dangerous percent-escape")
            decoded.append(b)
            i += 3
            continue
        if c not in _RAW_OK:
            raise BadPath(f"byte 0x{c:02x} not allowed in a path")
        decoded.append(c)
        i += 1
    try:
        text = decoded.decode("utf-8")  # strict: rejects overlong forms and surrogates
    except UnicodeDecodeError:
        raise BadPath("escapes are not valid UTF-8") from None
    segments = path.split(b"/")[1:]
    for k, seg in enumerate(segments):
        if seg in (b".", b".."):
            raise BadPath("dot segment")
        if seg == b"" and k != len(segments) - 1:
            raise BadPath("empty path segment")
    del text
    return path.decode("ascii")
