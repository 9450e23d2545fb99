"""What one client may hold: connection caps per address and in total, and the body-rate rule. Sans-IO.

The numbers are config (`services.web.limits`, proxyd/config/web.py `WebLimits`, which says why each
default). Here:
- total: the configured cap, and at most the process's file limit minus a reserve, halved (a
  forwarded request holds two descriptors): accept() must never hit EMFILE, which would stall
  every listener of every service in this process (SIP, media and XMPP keep the reserve).
- body rate: after `body_grace` seconds a request body must have averaged `min_body_rate`
  bytes/s; a slow-POST client is answered 408 and its backend connection reset.
- bodies up to `BUFFER_BODY` bytes are received whole before a backend connection is taken, so a
  client dripping a small body costs the backend nothing.
"""

from __future__ import annotations

import logging
import resource
from collections import Counter

from proxyd.config import WebLimits

DEFAULT = WebLimits()

log = logging.getLogger("services.http")

FD_RESERVE = 1024  # descriptors kept for listeners, logs, SIP, media and XMPP sockets
BUFFER_BODY = 64 * 1024


def total_from_fd_limit(cap: int = DEFAULT.connections_total, soft: int | None = None) -> int:
    if soft is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            soft = 2 * cap + FD_RESERVE
    return max(64, min(cap, (soft - FD_RESERVE) // 2))


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

    def __init__(self, per_address: int = DEFAULT.connections_per_address, budget: Budget | None = None,
                 service: str = "http") -> None:
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


def configure(gate: ConnectionGate, limits: WebLimits) -> None:
    """Apply a new config's caps: connections already open stay, new ones count against the new numbers."""
    gate.per_address = limits.connections_per_address
    gate.budget.total = total_from_fd_limit(limits.connections_total)


def body_deadline(started: float, received: int, now: float, limits: WebLimits) -> float:
    """When a body that began at `started` and has `received` bytes so far is too slow: it must keep
    the average rate after the grace period, and never stall longer than the idle timeout."""
    return min(started + limits.body_grace + received / limits.min_body_rate, now + limits.idle_timeout)
