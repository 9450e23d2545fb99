"""Provisioning routes and the denial limiter. Sans-IO (time passed in).

`/p/<token>[/<file>]` (mode encrypted) and `/p/<instance>/<mac>`, `/p/<instance>/<mac>/<file>`,
`/p/<instance>/<file-containing-the-mac>` (modes https, http_and_https) are forwarded to the
instance's provisioning URL template with the MAC filled in (in the spelling its placeholder asks
for: `{mac}`, `{MAC}`, `{mac:}`..., see `template.py`); a file name is appended as one more path
segment. Only GET and HEAD without a body are served.

Every denial is one response, byte for byte (`DENIED`, and the connection closes after it): a
malformed or non-canonical path, an unknown or tampered token, an unknown instance, a MAC that is
not a unicast device address, another method or a body, and the backend's own 403/404 (replaced
by the proxy, so an unknown device looks like a malformed request). Every denial counts against
the client's address and its prefix (IPv4 /24, IPv6 /64); past the limit the address or the
whole prefix gets 429 with Retry-After for a while, so tokens and MACs cannot be enumerated, not
even from many addresses of one network.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from proxyd.provisioning_template import fill
from services.http.routes import Backend, Decision, Forward, Refuse

if TYPE_CHECKING:
    from services.http.http1 import Head
from services.provisioning.token import InvalidToken, decode_key, decode_token, normalize_mac

FILE_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAC_IN_FILE = re.compile(r"(?<![0-9A-Fa-f])([0-9A-Fa-f]{12})(?![0-9A-Fa-f])")
FAIL_LIMIT = 20  # denials per address within FAIL_WINDOW before it is blocked
PREFIX_LIMIT = 60  # denials per /24 or /64 within FAIL_WINDOW before the whole prefix is blocked
FAIL_WINDOW = 60.0
BLOCK_SECONDS = 300.0
TABLE_MAX = 65_536  # entries per table (addresses, prefixes); the least recently denied goes first
DENIED = Refuse(404, "not found", close=True)
#: the same refusal on the wire (Refuse compares without its reason), told apart in the log and
#: in pforte_http_refusals_total{route="provisioning"} (proxyd.events.PROVISIONING_DENIALS)
_DENIALS = {why: Refuse(404, f"denied: {why}", close=True) for why in (
    "malformed_path", "unknown_token", "unknown_instance", "bad_mac", "method", "other_spelling", "backend_denied")}
DENIAL_STATUSES = frozenset({403, 404})


def prefix_of(ip: str) -> str:
    """The network a client's address belongs to for counting: IPv4 /24, IPv6 /64."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bits = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


@dataclass
class _Count:
    started: float  # the current window's start
    n: int = 0
    blocked_until: float = 0.0


class _Window:
    """Denials per key in fixed windows; a key over `limit` is blocked for `block` seconds.

    An OrderedDict in least-recently-denied order, at most `size` keys: a full table drops its
    oldest entry (O(1)), so a scan from ever new addresses costs bounded memory."""

    def __init__(self, limit: int, window: float, block: float, size: int) -> None:
        self.limit, self.window, self.block, self.size = limit, window, block, size
        self.entries: OrderedDict[str, _Count] = OrderedDict()

    def blocked_for(self, key: str, now: float) -> float:
        e = self.entries.get(key)
        return e.blocked_until - now if e is not None and e.blocked_until > now else 0.0

    def count(self, key: str, now: float) -> bool:
        """One denial for `key`; True when this one blocks it."""
        e = self.entries.get(key)
        if e is None:
            if len(self.entries) >= self.size:
                self.entries.popitem(last=False)
            e = self.entries[key] = _Count(now)
        else:
            self.entries.move_to_end(key)
            if now - e.started >= self.window:
                e.started, e.n = now, 0
        e.n += 1
        if e.n >= self.limit and e.blocked_until <= now:
            e.blocked_until, e.n = now + self.block, 0
            return True
        return False

    def blocked(self, now: float) -> int:
        return sum(1 for e in self.entries.values() if e.blocked_until > now)


@dataclass
class FailLimiter:
    """Counts denials per source address and per prefix; blocks either once it has too many."""

    limit: int = FAIL_LIMIT
    window: float = FAIL_WINDOW
    block: float = BLOCK_SECONDS
    clock: Callable[[], float] = time.monotonic
    prefix_limit: int = PREFIX_LIMIT
    size: int = TABLE_MAX
    blocks: int = 0

    def __post_init__(self) -> None:
        self.addresses = _Window(self.limit, self.window, self.block, self.size)
        self.prefixes = _Window(self.prefix_limit, self.window, self.block, self.size)

    def blocked_for(self, src: str) -> float:
        """Seconds `src` stays blocked (by its address or its prefix); 0: not blocked."""
        now = self.clock()
        return max(self.addresses.blocked_for(src, now), self.prefixes.blocked_for(prefix_of(src), now))

    def is_blocked(self, src: str) -> bool:
        return self.blocked_for(src) > 0

    def failed(self, src: str) -> None:
        now = self.clock()
        self.blocks += self.addresses.count(src, now) + self.prefixes.count(prefix_of(src), now)

    def blocked_count(self) -> int:
        now = self.clock()
        return self.addresses.blocked(now) + self.prefixes.blocked(now)


def _target(template: str, mac: str, file: str | None) -> tuple[Backend, str]:
    url = fill(template, mac)
    backend = Backend.from_url(url)
    path = backend.base_path or "/"
    if file:
        path = path.rstrip("/") + "/" + file
    return Backend(backend.scheme, backend.host, backend.port, "", backend.verify), path


@dataclass(frozen=True)
class ProvisioningTable:
    mode: str  # encrypted | https | http_and_https
    key: bytes | None
    templates: tuple[tuple[str, str], ...]  # (instance, provisioning URL template)
    limiter: FailLimiter = field(compare=False, hash=False, default_factory=FailLimiter)

    statuses = DENIAL_STATUSES  # UpstreamDenial: the backend's 403/404 become DENIED
    kind: ClassVar[str] = "provisioning"  # route kind in metrics and the request log (proxyd/events.py)

    def route(self, path: str, query: str, client: str = "", head: Head | None = None) -> Decision:
        wait = self.limiter.blocked_for(client)
        if wait > 0:
            return Refuse(429, "too many failed provisioning lookups", close=True,
                          extra=b"Retry-After: %d\r\n" % math.ceil(wait))
        if head is not None and (head.method not in (b"GET", b"HEAD") or head.chunked or head.content_length):
            return self.denied(client, "method")
        if head is not None and head.target != (path + query).encode("latin-1"):
            return self.denied(client, "other_spelling")  # one device, one URL: no other spelling of it is served
        decision = self._lookup(path)
        if isinstance(decision, str):
            return self.denied(client, decision)
        decision.deny = self
        return decision

    def denied(self, client: str, why: str = "backend_denied") -> Refuse:
        self.limiter.failed(client)
        return _DENIALS[why]

    def unreadable(self, reason: str, client: str) -> Refuse:
        return self.denied(client, "malformed_path")

    def _lookup(self, path: str) -> Forward | str:
        """The forward for `path`, or why it is denied."""
        parts = path.split("/")[1:]
        if len(parts) < 2 or parts[0] != "p" or not all(FILE_RE.match(p) for p in parts[1:]):
            return "malformed_path"
        templates = dict(self.templates)
        if self.mode == "encrypted":
            return self._by_token(parts[1:], templates)
        return self._trusted(parts[1:], templates)

    def _by_token(self, parts: list[str], templates: dict[str, str]) -> Forward | str:
        if self.key is None or len(parts) > 2:
            return "malformed_path"
        try:
            instance, mac = decode_token(self.key, parts[0])
        except InvalidToken:
            return "unknown_token"
        template = templates.get(instance)
        if template is None:
            return "unknown_instance"
        backend, target = _target(template, mac, parts[1] if len(parts) == 2 else None)
        return Forward(backend, target, None, backend.host_header, None, instance)

    def _trusted(self, parts: list[str], templates: dict[str, str]) -> Forward | str:
        template = templates.get(parts[0])
        if template is None:
            return "unknown_instance"
        if len(parts) not in (2, 3):
            return "malformed_path"
        mac = normalize_mac(parts[1])
        file = parts[2] if len(parts) == 3 else None
        if mac is None and len(parts) == 2:
            m = MAC_IN_FILE.search(parts[1])
            mac, file = (normalize_mac(m.group(1)), parts[1]) if m else (None, None)
        if mac is None:
            return "bad_mac"
        backend, target = _target(template, mac, file)
        return Forward(backend, target, None, backend.host_header, None, parts[0])


def table_for(mode: str, key: str | None, templates: tuple[tuple[str, str], ...]) -> ProvisioningTable:
    return ProvisioningTable(mode, decode_key(key) if key else None, templates)
