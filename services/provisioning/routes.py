"""Provisioning routes and the failed-lookup limiter. Sans-IO (time passed in).

`/p/<token>[/<file>]` (mode encrypted) and `/p/<instance>/<mac>`, `/p/<instance>/<mac>/<file>`,
`/p/<instance>/<file-containing-the-mac>` (modes https, http_and_https) are forwarded to the
instance's provisioning URL template with the MAC filled in (in the spelling its placeholder asks
for: `{mac}`, `{MAC}`, `{mac:}`..., see `template.py`); a file name is appended as one more path
segment. Every failure is the same 404; a source with too many failures is blocked
for a while (429), so tokens and MACs cannot be enumerated.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from proxyd.provisioning_template import fill
from services.http.routes import NOT_FOUND, Backend, Decision, Forward, Refuse
from services.provisioning.token import InvalidToken, decode_key, decode_token, normalize_mac

FILE_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
MAC_IN_FILE = re.compile(r"(?<![0-9A-Fa-f])([0-9A-Fa-f]{12})(?![0-9A-Fa-f])")
FAIL_LIMIT = 20  # failed lookups per source within FAIL_WINDOW before it is blocked
FAIL_WINDOW = 60.0
BLOCK_SECONDS = 300.0
BLOCKED = Refuse(429, "too many failed provisioning lookups")


@dataclass
class FailLimiter:
    """Counts failed lookups per source address; blocks a source that fails too often."""

    limit: int = FAIL_LIMIT
    window: float = FAIL_WINDOW
    block: float = BLOCK_SECONDS
    clock: Callable[[], float] = time.monotonic
    fails: dict[str, list[float]] = field(default_factory=dict)
    blocked_until: dict[str, float] = field(default_factory=dict)
    blocks: int = 0

    def is_blocked(self, src: str) -> bool:
        until = self.blocked_until.get(src)
        if until is None:
            return False
        if self.clock() >= until:
            del self.blocked_until[src]
            return False
        return True

    def failed(self, src: str) -> None:
        now = self.clock()
        recent = [t for t in self.fails.get(src, []) if now - t < self.window]
        recent.append(now)
        if len(recent) >= self.limit:
            self.blocked_until[src] = now + self.block
            self.blocks += 1
            recent = []
        self.fails[src] = recent
        if len(self.fails) > 100_000:  # bound memory under a distributed scan
            self.fails.clear()


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

    def route(self, path: str, query: str, client: str = "") -> Decision:
        if self.limiter.is_blocked(client):
            return BLOCKED
        decision = self._lookup(path)
        if decision is NOT_FOUND:
            self.limiter.failed(client)
        return decision

    def _lookup(self, path: str) -> Decision:
        parts = path.split("/")[1:]
        if len(parts) < 2 or parts[0] != "p" or not all(FILE_RE.match(p) for p in parts[1:]):
            return NOT_FOUND
        templates = dict(self.templates)
        if self.mode == "encrypted":
            return self._by_token(parts[1:], templates)
        return self._trusted(parts[1:], templates)

    def _by_token(self, parts: list[str], templates: dict[str, str]) -> Decision:
        if self.key is None or len(parts) > 2:
            return NOT_FOUND
        try:
            instance, mac = decode_token(self.key, parts[0])
        except InvalidToken:
            return NOT_FOUND
        template = templates.get(instance)
        if template is None:
            return NOT_FOUND
        backend, target = _target(template, mac, parts[1] if len(parts) == 2 else None)
        return Forward(backend, target, None, backend.host_header)

    def _trusted(self, parts: list[str], templates: dict[str, str]) -> Decision:
        template = templates.get(parts[0])
        if template is None or len(parts) not in (2, 3):
            return NOT_FOUND
        mac = normalize_mac(parts[1])
        file = parts[2] if len(parts) == 3 else None
        if mac is None and len(parts) == 2:
            m = MAC_IN_FILE.search(parts[1])
            mac, file = (normalize_mac(m.group(1)), parts[1]) if m else (None, None)
        if mac is None:
            return NOT_FOUND
        backend, target = _target(template, mac, file)
        return Forward(backend, target, None, backend.host_header)


def table_for(mode: str, key: str | None, templates: tuple[tuple[str, str], ...]) -> ProvisioningTable:
    return ProvisioningTable(mode, decode_key(key) if key else None, templates)
