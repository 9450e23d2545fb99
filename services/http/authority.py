"""Which name a request addressed: the authority checked by grammar (400), then by name (421). Sans-IO.

`Host` and, when the request-target is in absolute form, the target's authority (which wins, RFC
9112 §3.2.2; the two must agree here) must be RFC 3986 `host [ ":" port ]` exactly: a reg-name
(without `,` or escapes), an IPv4 address or a bracketed IPv6 address; no userinfo, `/`, `?`, `#`,
whitespace. A well-formed name that is not one of this proxy's names gets 421 Misdirected
Request and never reaches a route: no default host, so a backend never serves a request sent to
a name it was not published under (DNS rebinding, Host-header poisoning of absolute links and
password-reset mails).

The proxy's names: `proxy.fqdn` and `proxy.aliases` (one trailing dot allowed), and the bind address as a literal only
when the proxy binds to a loopback address (local tests and `make run`, where clients address the
proxy as `127.0.0.1`). `localhost` or any IP literal is a name of the proxy only when it is the
configured fqdn. The port is not compared: port forwarding may put the proxy behind another port.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from services.http.http1 import HttpError

# RFC 3986 reg-name = *( unreserved / pct-encoded / sub-delims ), minus ',' (a list separator to
# some parsers) and escapes (a name never needs one); IPv4 literals match this too.
_REG_NAME = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+;=]*")
_PORT = re.compile(rb"[0-9]{0,5}")
_ABSOLUTE = re.compile(rb"(?i:https?)://([^/?#]*)(.*)", re.S)


def parse_authority(value: bytes) -> tuple[str, str]:
    """-> (host lower-cased, port or ''). HttpError(400) for anything but `host [ ":" port ]`."""
    if value.startswith(b"["):
        end = value.find(b"]")
        if end < 0:
            raise HttpError(400, "malformed IPv6 literal in authority")
        literal, rest = value[1:end], value[end + 1:]
        if b"%" in literal:  # a zone id names an interface of the client's host, never us
            raise HttpError(400, "zone id in IPv6 literal")
        try:
            host = str(ipaddress.IPv6Address(literal.decode("ascii")))
        except (ValueError, UnicodeDecodeError):
            raise HttpError(400, "malformed IPv6 literal in authority") from None
        host = f"[{host}]"
    else:
        name, colon, port = value.partition(b":")
        rest = colon + port
        if _REG_NAME.fullmatch(name) is None:
            raise HttpError(400, "malformed host in authority")
        if not name:
            raise HttpError(400, "empty host in authority")
        host = name.decode("ascii").lower()
    if not rest:
        return host, ""
    if rest[:1] != b":" or _PORT.fullmatch(rest[1:]) is None or (rest[1:] and int(rest[1:]) > 65535):
        raise HttpError(400, "malformed port in authority")
    return host, rest[1:].decode("ascii")


@dataclass(frozen=True)
class Names:
    """The names this proxy answers to (see the module docstring)."""

    fqdn: str
    bind: str = ""
    aliases: tuple[str, ...] = ()
    seen: dict[bytes, bool] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = {self.fqdn.lower().rstrip(".")}
        for alias in self.aliases:
            try:  # an IP literal as parse_authority writes it: normalised, IPv6 bracketed
                ip = ipaddress.ip_address(alias)
                names.add(f"[{ip}]" if ip.version == 6 else str(ip))
            except ValueError:
                names.add(alias.lower().rstrip("."))
        try:
            addr = ipaddress.ip_address(self.bind)
        except ValueError:
            addr = None
        if addr is not None and addr.is_loopback:
            names.add(f"[{addr}]" if addr.version == 6 else str(addr))
        object.__setattr__(self, "_names", frozenset(names))

    def serves(self, host: str) -> bool:
        if host.endswith("."):
            host = host[:-1]
        return host in self._names  # type: ignore[attr-defined]


MAX_SEEN = 256  # Host values that passed, remembered: the usual request costs one dict lookup


def request_target(target: bytes, host_field: bytes | None, names: Names | None) -> bytes:
    """The origin-form target to route on, once the authority passed; HttpError(400/421) otherwise.

    `names` None: no authority check at all (provisioning: phones are often configured with an IP;
    the target must then be origin-form, as canonical.split_target requires)."""
    if names is None:
        return target
    if target[:1] == b"/" and host_field is not None and host_field in names.seen:
        return target
    authority = host_field
    m = _ABSOLUTE.fullmatch(target) if target[:1] != b"/" else None
    if m is not None:
        if b"@" in m[1]:
            raise HttpError(400, "userinfo in the request-target")
        target = m[2] or b"/"
        if not target.startswith(b"/"):
            target = b"/" + target  # '?query' straight after the authority
        a = parse_authority(m[1])
        if host_field is not None and not _same(parse_authority(host_field)[0], a[0]):
            raise HttpError(400, "request-target authority and Host disagree")
        authority = m[1]
    if authority is None:
        raise HttpError(400, "no Host")
    host, _ = parse_authority(authority)
    if not names.serves(host):
        raise HttpError(421, f"{host!r} is not a name of this proxy")
    if authority is host_field:
        if len(names.seen) >= MAX_SEEN:
            names.seen.clear()
        names.seen[host_field] = True
    return target


def _same(a: str, b: str) -> bool:
    return a.removesuffix(".") == b.removesuffix(".")
