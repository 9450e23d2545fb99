"""Capped exponential backoff with jitter for talking to an unreachable manager (sans-IO)."""

from __future__ import annotations

import random


class Backoff:
    """`next()` gives the delay before the next retry; `reset()` after a success.

    The nominal delay doubles from `base` up to `cap`; the returned delay is drawn from
    [nominal/2, nominal] so that many proxies losing the same manager do not retry in lockstep.
    """

    def __init__(self, base: float = 1.0, cap: float = 60.0, rng: random.Random | None = None):
        if base <= 0 or cap < base:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng or random.Random()

    def nominal(self) -> float:
        # min() before the power would overflow for long outages; cap the exponent instead.
        return min(self.cap, self.base * 2 ** min(self.failures, 62))

    def next(self) -> float:
        delay = self.nominal()
        self.failures += 1
        return self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0
