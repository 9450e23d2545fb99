"""What one client may hold: connection caps per address and in total, and the body-rate rule. Sans-IO.

Limits, and why:
- `PER_ADDRESS` 256 connections: a browser opens 6 per origin; 256 leaves room for a few dozen
  users behind one NAT address while one source can no longer take every slot.
- total: the process's file limit minus a reserve, halved (a forwarded request holds two
  descriptors), at most `MAX_TOTAL`: accept() must never hit EMFILE, which would stall every
  listener of every service in this process (SIP, media and XMPP keep the reserve).
- `TLS_HANDSHAKE_TIMEOUT` 10 s (asyncio's default is 60 s): a connection that never finishes
  its handshake is not yet a client the head deadline or the idle sweep can see.
- body rate: after `BODY_GRACE` seconds a request body must have averaged `MIN_BODY_RATE`
  bytes/s; a slow-POST client is answered 408 and its backend connection reset.
- bodies up to `BUFFER_BODY` bytes are received whole before a backend connection is taken, so a
  client dripping a small body costs the backend nothing.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter

log = logging.getLogger("services.http")

PER_ADDRESS = 256
MAX_TOTAL = 50_000
FD_RESERVE = 1024  # descriptors kept for listeners, logs, SIP, media and XMPP sockets
TLS_HANDSHAKE_TIMEOUT = 10.0
BODY_GRACE = 10.0
MIN_BODY_RATE = 1024  # bytes per second, averaged from the body's start
BUFFER_BODY = 64 * 1024


def total_from_fd_limit(soft: int | None = None) -> int:
    if soft is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            soft = 2 * MAX_TOTAL + FD_RESERVE
    return max(64, min(MAX_TOTAL, (soft - FD_RESERVE) // 2))


class Budget:
    """The process-wide count of client connections (the HTTP router, applications and provisioning
    share one file limit)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.open = 0


_PROCESS: list[Budget] = []


def process_budget() -> Budget:
    if not _PROCESS:
        _PROCESS.append(Budget(total_from_fd_limit()))
    return _PROCESS[0]


class ConnectionGate:
    """Counts one service's client connections per address, and all of them against the budget;
    `admit()` says whether one more may stay."""

    def __init__(self, per_address: int = PER_ADDRESS, budget: Budget | None = None, service: str = "http") -> None:
        self.per_address = per_address
        self.budget = process_budget() if budget is None else budget
        self.service = service
        self.by_address: Counter[str] = Counter()
        self.refused = 0

    def admit(self, address: str) -> bool:
        budget = self.budget
        if budget.open >= budget.total:
            reason = f"total connection limit {budget.total} reached"
        elif self.by_address[address] >= self.per_address:
            reason = f"per-address connection limit {self.per_address} reached"
        else:
            budget.open += 1
            self.by_address[address] += 1
            return True
        self.refused += 1
        # the 1st, 2nd, 4th, 8th ... refusal is logged: a flood must not become a log flood
        if self.refused & (self.refused - 1) == 0:
            log.warning("event=connection_refused service=%s client=%s reason=%r refused_total=%d", self.service,
                        address, reason, self.refused)
        return False

    def release(self, address: str) -> None:
        self.budget.open -= 1
        left = self.by_address[address] - 1
        if left > 0:
            self.by_address[address] = left
        else:
            del self.by_address[address]


def body_deadline(started: float, received: int, now: float, idle: float) -> float:
    """When a body that began at `started` and has `received` bytes so far is too slow: it must keep
    the average rate after the grace period, and never stall longer than `idle`."""
    return min(started + BODY_GRACE + received / MIN_BODY_RATE, now + idle)
