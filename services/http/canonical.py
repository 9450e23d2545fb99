"""The one canonical-path function: it decides routing/allow AND yields the path forwarded. Sans-IO.

The router decides on the path every common backend would see, and forwards that path in its
canonical form. A target whose readings could differ between backends is refused (400) rather
than guessed at; one that only differs in spelling is canonicalised (RFC 3986 §6.2.2):

- canonicalised: escapes of unreserved characters are decoded (`%7E` -> `~`, `%61` -> `a`), other
  escapes get upper-case hex (`%c3%a4` -> `%C3%A4`);
- refused, because some backend reads them differently:
  * dot segments, raw or escaped (`..`, `%2e%2e`, `.%2E`) — RFC 3986 resolution escapes the prefix;
  * `;` raw or escaped (`%3B`): Tomcat, Jetty and Spring strip `;...` from each segment before
    matching (`/..;/`, `/.;x/` are dot segments there), Spring after decoding `%3B`;
  * `\\` raw or escaped (`%5C`): IIS, ASP.NET and Kestrel read it as `/`;
  * an escaped `/` (`%2F`): some backends decode it into a separator, some not;
  * `%25` (an escaped `%`): a backend that decodes twice sees another path;
  * `%u002e`-style escapes, malformed escapes, escapes that are not shortest-form UTF-8
    (overlong `%c0%ae` is `.` to a lenient decoder);
  * a non-ASCII character whose NFKC form (or Windows best-fit mapping) contains ASCII: fullwidth
    `．／＼％ａ` and friends become `./\\%a` on backends that fold compatibility characters;
  * empty segments (`//`), segments ending in `.` or space (`/api./`, `/api%20/`: Windows drops
    those), NUL, controls, raw space and raw non-ASCII bytes.
- case: routes match case-sensitively; `/API/` on a `/api/` route is simply not that route (404),
  so a case-insensitive backend only ever receives paths inside the exact prefix.
"""

from __future__ import annotations

import re
import string
import unicodedata

MAX_TARGET = 8192  # longer request lines are answered 414 before we get here


class BadPath(ValueError):
    """The request target cannot be routed as one unambiguous origin-form path."""


_UNRESERVED = frozenset((string.ascii_letters + string.digits + "-._~").encode())
# RFC 3986 pchar minus ";" (path parameters are refused) plus "/" as separator
_RAW_OK = _UNRESERVED | frozenset(b"!$&'()*+,=:@/")
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_ESCAPE_REFUSED = {0x2F: "an escaped '/'", 0x5C: "an escaped '\\'", 0x25: "an escaped '%' (double encoding)",
                   0x3B: "an escaped ';' (path parameter)"}
# Windows "best-fit" code page mappings that NFKC leaves alone but that become '/', '\\' or '.'
_BEST_FIT = frozenset("\u2215\u2044\u29f8\u2216\u29f9\u2024\u2025\u2026\u00b7\u0338\u2afd\u3002\uff61")
# Most paths have no escapes, dots at a segment's edge or empty segments: one match proves them canonical.
_PLAIN = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,=:@/]*")
_QUERY_BAD = re.compile(rb"[\x00-\x20\x7f#]")
_PLAIN_TARGET = re.compile(rb"(/[A-Za-z0-9\-._~!$&'()*+,=:@/]*)(\?[^\x00-\x20\x7f#]*)?")


def _plain_ok(path: bytes) -> bool:
    """A path of plain characters is canonical unless a segment is empty or starts/ends with '.'."""
    return b"//" not in path and b"/." not in path and b"./" not in path and not path.endswith(b".")


def split_target_py(target: bytes) -> tuple[str, str]:
    """-> (canonical path, query including its leading '?', or ''). Raises BadPath.
    The reference for `_chead.split_target`, which decides every target whose decoded path is ASCII."""
    m = _PLAIN_TARGET.fullmatch(target)
    if m is not None:  # the usual target: proven canonical by one match and a few substring checks
        path, query = m.groups()
        if _plain_ok(path):
            return path.decode("ascii"), query.decode("latin-1") if query else ""
    if not target.startswith(b"/"):
        raise BadPath("not an origin-form target")  # absolute-form, authority-form, '*'
    path, q, query = target.partition(b"?")
    if q and _QUERY_BAD.search(query):
        raise BadPath("control, space or '#' in query")
    return canonical_path(path), ("?" + query.decode("latin-1")) if q else ""


def canonical_path(path: bytes) -> str:
    """The canonical spelling of `path` (see the module docstring), or BadPath saying why not."""
    if not path.startswith(b"/"):
        raise BadPath("path must start with /")
    if _PLAIN.fullmatch(path) and _plain_ok(path):
        return path.decode("ascii")
    segments = path[1:].split(b"/")
    out: list[str] = []
    for k, seg in enumerate(segments):
        canon, decoded = _segment(seg)
        _check_segment(decoded, last=k == len(segments) - 1)
        out.append(canon)
    return "/" + "/".join(out)


def _segment(seg: bytes) -> tuple[str, bytes]:
    """-> (canonical spelling, decoded bytes) of one segment."""
    canon = bytearray()
    decoded = bytearray()
    i, n = 0, len(seg)
    while i < n:
        c = seg[i]
        if c == 0x25:  # '%'
            if i + 2 >= n or seg[i + 1] not in _HEX or seg[i + 2] not in _HEX:
                raise BadPath("malformed percent-escape (or a %u escape)")
            b = int(seg[i + 1 : i + 3], 16)
            if b in _ESCAPE_REFUSED:
                raise BadPath(_ESCAPE_REFUSED[b])
            if b < 0x20 or b == 0x7F:
                raise BadPath("an escaped NUL or control character")
            if b in _UNRESERVED:
                canon.append(b)  # RFC 3986 §6.2.2.2: the same path, spelled without the escape
            else:
                canon += b"%%%02X" % b
            decoded.append(b)
            i += 3
            continue
        if c not in _RAW_OK:
            raise BadPath(f"byte 0x{c:02x} not allowed in a path")
        canon.append(c)
        decoded.append(c)
        i += 1
    return canon.decode("ascii"), bytes(decoded)


def _check_segment(decoded: bytes, last: bool) -> None:
    if decoded in (b".", b".."):
        raise BadPath("dot segment")
    if not decoded:
        if not last:
            raise BadPath("empty path segment")
        return
    if decoded[-1:] in (b".", b" "):
        raise BadPath("segment ends in '.' or space (Windows drops them)")
    if decoded.isascii():
        return
    try:
        text = decoded.decode("utf-8")  # strict: rejects overlong forms and surrogates
    except UnicodeDecodeError:
        raise BadPath("escapes are not valid UTF-8") from None
    for ch in text:
        if ch < "\x80":
            continue
        folded = unicodedata.normalize("NFKC", ch)
        if ch in _BEST_FIT or any(f < "\x80" for f in folded):
            raise BadPath(f"U+{ord(ch):04X} folds to ASCII on backends that normalise Unicode")
        if unicodedata.category(ch) in ("Cc", "Cf", "Zs", "Zl", "Zp"):
            raise BadPath(f"U+{ord(ch):04X} is an invisible or space character")


try:  # the C decision (services/http/_chead.c), equal to split_target_py (tests/services/http/test_chead.py)
    from services.http import _chead
except ImportError:
    _chead = None

if _chead is not None:
    _chead.configure_paths(BadPath)
    _c_split = _chead.split_target

    def split_target(target: bytes) -> tuple[str, str]:
        """-> (canonical path, query including its leading '?', or ''). Raises BadPath."""
        return _c_split(target) or split_target_py(target)
else:
    split_target = split_target_py
