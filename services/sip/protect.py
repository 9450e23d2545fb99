"""Pike-like per-source request rate limiting and scanner detection — sans-IO, time passed in."""

from __future__ import annotations

from dataclasses import dataclass

SCANNERS = ("friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sundayddr", "iwar", "sipsak")


def is_scanner(user_agent: str | None) -> bool:
    ua = (user_agent or "").lower()
    return any(s in ua for s in SCANNERS)


@dataclass
class _Bucket:
    start: float
    count: int
    blocked_until: float = 0.0


class RateLimiter:
    """At most `limit` messages per `window` seconds per source IP, else blocked for `block`."""

    def __init__(self, limit: int = 200, window: float = 1.0, block: float = 30.0, max_sources: int = 100_000):
        self.limit, self.window, self.block, self.max_sources = limit, window, block, max_sources
        self._b: dict[str, _Bucket] = {}
        self.just_blocked = False  # the last refused allow() started a block

    def allow(self, ip: str, now: float) -> bool:
        b = self._b.get(ip)
        if b is None:
            if len(self._b) >= self.max_sources:
                self.expire(now)
            self._b[ip] = _Bucket(now, 1)
            return True
        self.just_blocked = False
        if b.blocked_until > now:
            return False
        if now - b.start >= self.window:
            b.start, b.count = now, 0
        b.count += 1
        if b.count > self.limit:
            b.blocked_until = now + self.block
            self.just_blocked = True
            return False
        return True

    def blocked(self, now: float) -> int:
        return sum(1 for b in self._b.values() if b.blocked_until > now)

    def expire(self, now: float) -> None:
        horizon = max(self.window, self.block)
        self._b = {ip: b for ip, b in self._b.items() if now - b.start < horizon or b.blocked_until > now}
