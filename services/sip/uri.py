"""Sans-IO SIP URI and name-addr parsing (RFC 3261 §19.1, §25.1).

Escapes (%XX) are left as they are: the relay compares and forwards URIs without unescaping
them, so "%00" never shortens a user part and "?Route=" stays inside the URI it came with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")
_PARAM_VALUE = re.compile(r'^([\[\]:A-Za-z0-9\-.!%*_+`\'~]+|"(?:[^"\\]|\\.)*")$', re.S)


class UriError(ValueError):
    pass


@dataclass
class Uri:
    scheme: str
    user: str | None
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    def __str__(self) -> str:
        s = f"{self.scheme}:"
        if self.user is not None:
            s += f"{self.user}@"
        s += self.host if self.port is None else f"{self.host}:{self.port}"
        s += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        return s + (f"?{self.headers}" if self.headers else "")


@lru_cache(maxsize=8192)
def parse_uri(text: str) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme) or not rest or any(c in rest for c in " \t\r\n<>"):
        raise UriError("malformed URI")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        return Uri(scheme, None, rest, None)
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.partition("@")
    rest, _, headers = rest.partition("?")
    hostport, *params = rest.split(";")
    host, port = _host_port(hostport)
    return Uri(scheme, user, host, port, _params(params), headers)


def _host_port(s: str) -> tuple[str, int | None]:
    if s.startswith("["):
        end = s.find("]")
        host, port_s = s[: end + 1], s[end + 2:] if s[end + 1: end + 2] == ":" else ""
    else:
        host, _, port_s = s.partition(":")
    if not host or not _HOST.match(host):
        raise UriError("bad host")
    if port_s and (not (port_s.isascii() and port_s.isdigit()) or not 0 < int(port_s) < 65536):
        raise UriError("bad port")
    return host.lower(), int(port_s) if port_s else None


def _params(items: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in items:
        k, eq, v = p.partition("=")
        k, v = k.strip(" \t"), v.strip(" \t")
        if not _TOKEN.match(k) or (eq and not _PARAM_VALUE.match(v)):
            raise UriError("bad parameter")
        out[k.lower()] = v if eq else None
    return out


@dataclass
class NameAddr:
    display: str
    uri: Uri
    params: dict[str, str | None]


@lru_cache(maxsize=8192)  # From/To/Contact repeat in every message of a call; results are not mutated
def parse_name_addr(value: str) -> NameAddr:
    """`display <uri>;params` or a bare addr-spec whose `;params` belong to the header."""
    value = value.strip(" \t")
    display, start, end, after = _uri_span(value)
    uri = parse_uri(value[start:end])
    tail = value[after:].strip(" \t")
    if tail and not tail.startswith(";"):
        raise UriError("junk after URI")
    return NameAddr(display, uri, _params(split_params(tail)[1:]) if tail else {})


def _uri_span(value: str) -> tuple[str, int, int, int]:
    """(display name, where the URI starts, where it ends, where the header parameters start)
    in a stripped name-addr or addr-spec."""
    display, i = _display(value)
    if i < len(value) and value[i] == "<":
        end = value.find(">", i)  # a URI holds no ">": the first one closes it
        if end == -1:
            raise UriError("unterminated <")
        if value[i + 1:end] != value[i + 1:end].strip(" \t"):
            raise UriError("space inside <>")
        return display, i + 1, end, end + 1
    if display:
        raise UriError("display name without <>")
    end = value.find(";")
    end = len(value) if end == -1 else end
    while end > 0 and value[end - 1] in " \t":
        end -= 1
    if any(c in value[:end] for c in "?, "):
        raise UriError("addr-spec with reserved characters must be enclosed in <>")
    return "", 0, end, end


def split_params(tail: str) -> list[str]:
    """`tail` split at the ";" outside quoted strings: a quoted value may hold ";" ("," "<>"),
    as RFC 5627's `pub-gruu="sip:a@b;gr=urn:uuid:..."` does. The first item is what precedes
    the first ";"."""
    if '"' not in tail:
        return tail.split(";")
    out: list[str] = []
    start, quote, esc = 0, False, False
    for i, ch in enumerate(tail):
        if esc:
            esc = False
        elif quote and ch == "\\":
            esc = True
        elif ch == '"':
            quote = not quote
        elif ch == ";" and not quote:
            out.append(tail[start:i])
            start = i + 1
    out.append(tail[start:])
    return out


def add_uri_param(value: str, param: str) -> str:
    """`value` (a name-addr or addr-spec) with `;param` added to its URI's parameters.

    The URI is found as `parse_name_addr` finds it, and the parameter ends the URI's own
    parameters (before any `?headers`); the display name and the header parameters after the
    URI are left as they came. A bare addr-spec gets <> (its `;params` belong to the header)."""
    value = value.strip(" \t")
    _, start, end, _ = _uri_span(value)
    uri = value[start:end]
    parse_uri(uri)  # raises UriError as parse_name_addr would
    at = uri.find("@")
    q = uri.find("?", at + 1)
    uri = uri + ";" + param if q == -1 else uri[:q] + ";" + param + uri[q:]
    if start > 0:
        return value[:start] + uri + value[end:]
    return f"<{uri}>{value[end:]}"


def _display(value: str) -> tuple[str, int]:
    """The display name and the index where the URI part starts."""
    if value.startswith('"'):
        i, esc = 1, False
        while i < len(value):
            ch = value[i]
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                j = i + 1
                while j < len(value) and value[j] in " \t":
                    j += 1
                return value[: i + 1], j
            i += 1
        raise UriError("unterminated quoted display name")
    lt = value.find("<")
    semi = value.find(";")
    if lt == -1 or -1 < semi < lt:  # an addr-spec: a "<" after its ";" is in a parameter's quoted value
        return "", 0
    words = value[:lt].split()
    if not all(_TOKEN.match(w) for w in words):
        raise UriError("display name with non-token characters must be quoted")
    return value[:lt].strip(), lt
