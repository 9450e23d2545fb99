"""The port allocator: even RTP ports (+ the next odd for RTCP) from the configured range."""

from __future__ import annotations

from collections.abc import Callable


class PortsExhausted(Exception):
    pass


class PortAllocator:
    def __init__(self, lo: int, hi: int):
        self.resize(lo, hi)
        self.used: set[int] = set()

    def resize(self, lo: int, hi: int) -> None:
        """New range; ports in use outside it stay used until released (calls keep their ports)."""
        self.lo, self.hi = lo, hi
        self._next = lo

    @property
    def capacity(self) -> int:
        return (self.hi - self.lo + 1) // 2

    def allocate(self, is_free: Callable[[int], bool] = lambda port: True) -> int:
        """An even port p with p and p+1 unused (and `is_free(p)`), round robin over the range."""
        span = self.capacity
        for _ in range(span):
            p = self._next
            self._next = p + 2 if p + 3 <= self.hi else self.lo
            if p not in self.used and p + 1 <= self.hi and is_free(p):
                self.used.add(p)
                return p
        raise PortsExhausted(f"no free port pair in {self.lo}-{self.hi}")

    def release(self, port: int) -> None:
        self.used.discard(port)
