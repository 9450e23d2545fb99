"""The contract every pluggable listener implements, and the context it runs in.

A service is found through the `pforte.services` entry-point group. The supervisor asks each
service class for its *view* of a `ProxyConfig` — a frozen, comparable value holding only what
that service needs (None: the service should not run). Views are diffed; a service is started,
reconfigured with its new view, or stopped only when its own view changed.

Rules for implementations:
- `reconfigure()` keeps established connections, calls and sessions alive. When the bind
  address/port is unchanged it swaps immutable route tables in place and does not rebind.
- Protocol parsing lives in sans-IO modules beside the service (no sockets, time passed in).
- `report()` returns a typed `proxyd.stats.ServiceStats`; `/status` shows it as JSON (`stats()`),
  its numbers become Prometheus metrics (see `proxyd.metrics`).
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from proxyd.stats import ServiceStats

if TYPE_CHECKING:
    from proxyd.access import AccessList
    from proxyd.config import ProxyConfig
    from proxyd.statedir import StateDir
    from proxyd.tls import CertStore


class Histogram:
    """Counts of observed values (seconds) per bucket, for a service's `stats()`.

    One bisect and two additions per observation: cheap enough for a per-request path. The
    bucket bounds are fixed when it is made, so every scrape shows every bucket from the start.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def to_json(self) -> dict[str, Any]:
        """Cumulative counts per upper bound, as Prometheus wants them; JSON-able."""
        running, buckets = 0, []
        for le, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            buckets.append([le, running])
        return {"buckets": buckets, "sum": self.sum, "count": running}


#: latency bounds in seconds from 1 ms to a minute (the default upstream timeout)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceError(RuntimeError):
    """A service could not start or apply a view; the message says what and, if known, how to fix."""


@dataclass
class ServiceContext:
    """What the daemon gives every service."""

    state: StateDir
    certs: CertStore
    access: AccessList
    lookup: Callable[[str], Service | None] = field(default=lambda name: None)
    #: ACME HTTP-01 token -> key authorization while an order is in flight; plain-HTTP listeners
    #: on `tls.acme_http_port` answer from it (filled by the renewer, proxyd/acme_task.py)
    acme_tokens: dict[str, str] = field(default_factory=dict)
    #: DNS-01: (name, value, present) -> None, blocking (the renewer's worker thread calls it); set by
    #: the agent of a managed proxy, which asks the manager to set the TXT record (proxyd/agent/acme_dns.py)
    acme_dns: Callable[[str, str, bool], None] | None = None
    #: one of several workers (`proxyd run --workers N`): TCP listeners share their port (SO_REUSEPORT);
    #: off otherwise, so that a second proxyd on the same port fails to bind instead of sharing it
    reuse_port: bool = False

    def logger(self, service: str) -> logging.Logger:
        return logging.getLogger(f"services.{service}")


class Service(abc.ABC):
    name: ClassVar[str]
    #: Services with a lower order start earlier and stop later (media before sip, say).
    order: ClassVar[int] = 50

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self.log = ctx.logger(self.name)
        self.last_error: str | None = None

    @classmethod
    @abc.abstractmethod
    def view(cls, cfg: ProxyConfig) -> Hashable | None:
        """This service's part of the config, or None when it must not run."""

    @abc.abstractmethod
    async def start(self, view: Any) -> None:
        """Bind listeners for `view`; raise ServiceError (with a hint) if that is impossible."""

    @abc.abstractmethod
    async def reconfigure(self, view: Any) -> None:
        """Apply a changed view live, keeping established connections."""

    @abc.abstractmethod
    async def stop(self, timeout: float) -> None:
        """Stop accepting, let established work finish for up to `timeout` seconds, then close."""

    def every(self, interval: float, step: Callable[[float], None], what: str) -> asyncio.Task[None]:
        """Run `step(time.monotonic())` every `interval` seconds until the task is cancelled.

        A step that raises is a bug, and the loop must outlive it: the timers and sweeps of every
        other call and connection depend on it. So it is logged with its traceback
        (`event=service_step_failed`), becomes this service's `last_error` (status, metrics and the
        manager show it until the next applied revision), and the next step runs as planned."""
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    step(time.monotonic())
                except Exception as exc:  # noqa: BLE001 - see the docstring
                    self.log.exception("event=service_step_failed service=%s step=%r", self.name, what)
                    self.last_error = f"{what} failed: {type(exc).__name__}: {exc}"
        return asyncio.get_running_loop().create_task(loop(), name=f"{self.name}: {what}")

    def report(self) -> ServiceStats:
        """What this service reports now: listeners, counters, gauges, histograms, tables."""
        return ServiceStats()

    def stats(self) -> dict[str, Any]:
        """`report()` as `/status` shows it (JSON)."""
        return self.report().to_json()
