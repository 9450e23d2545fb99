"""The port pool: even RTP ports (+ the next odd for RTCP) of the configured range. Sans-IO.

`take(n)` gives `n` pairs or none (all or nothing), `give(port)` takes one back; both O(1) per
port. Free ports are a stack: the pair given back last is taken first, so the media adapter's
spare sockets (kept bound for the next call) are the ones asked for again. A port the adapter
could not bind (another process holds it) is `block`ed, out of circulation and counted neither
free nor in use, until `unblock` gives it another try.
"""

from __future__ import annotations

from collections import deque


class PortPool:
    def __init__(self, lo: int, hi: int):
        self.used: set[int] = set()
        self.blocked: deque[tuple[float, int]] = deque()  # (until, port), oldest first
        self.resize(lo, hi)

    def resize(self, lo: int, hi: int) -> None:
        """New range; ports in use outside it stay used until given back, then leave the pool."""
        self.lo, self.hi = lo, hi
        out = {p for _, p in self.blocked}
        self._free = [p for p in range(self._top(), lo - 1, -2) if p not in self.used and p not in out]
        self._free_set = set(self._free)

    def _top(self) -> int:
        """The last even port whose RTCP port (p + 1) is still in the range."""
        top = self.hi - 1
        return top - (top - self.lo) % 2

    @property
    def capacity(self) -> int:
        return (self.hi - self.lo + 1) // 2

    @property
    def available(self) -> int:
        return len(self._free)

    def in_range(self, port: int) -> bool:
        return self.lo <= port and port + 1 <= self.hi and (port - self.lo) % 2 == 0

    def take(self, n: int) -> list[int] | None:
        """`n` port pairs (their even ports), or None and nothing taken."""
        if n > len(self._free):
            return None
        got = [self._free.pop() for _ in range(n)]
        self._free_set.difference_update(got)
        self.used.update(got)
        return got

    def give(self, port: int) -> None:
        """Take a pair back (idempotent); one outside the range now is forgotten."""
        if port not in self.used:
            return
        self.used.discard(port)
        if self.in_range(port) and port not in self._free_set:
            self._free.append(port)
            self._free_set.add(port)

    def block(self, port: int, until: float) -> None:
        """A taken pair the adapter could not bind: out of circulation until `until`."""
        if port in self.used:
            self.used.discard(port)
            self.blocked.append((until, port))

    def unblock(self, now: float) -> None:
        """Blocked pairs whose time is up go back to the free stack (at the bottom: tried last)."""
        back: list[int] = []
        while self.blocked and self.blocked[0][0] <= now:
            _, port = self.blocked.popleft()
            if self.in_range(port) and port not in self._free_set:
                back.append(port)
        if back:
            self._free[:0] = back
            self._free_set.update(back)
