"""A bounded least-recently-used table: what every SIP table that network data fills is.

A hit moves the key to the end, a new key past the bound evicts the least recently used one,
both O(1) (an OrderedDict's linked list). A flood of new keys (spoofed sources, invented Route
sets) only ever evicts what was not used for longest; a key in use (a phone's flow, sending
every few seconds) stays. Main cleared such tables wholesale when full: each new key of a
flood then evicted every phone's entry at once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Lru(OrderedDict[K, V], Generic[K, V]):
    def __init__(self, max_keys: int):
        super().__init__()
        self.max_keys = max_keys

    def hit(self, key: K) -> V | None:
        """The value of `key` (now the most recently used), or None."""
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        """Set `key` (a new key past the bound evicts the least recently used one)."""
        if key in self:
            self.move_to_end(key)
        elif len(self) >= self.max_keys:
            self.popitem(last=False)
        self[key] = value
