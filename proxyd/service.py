"""The contract every pluggable listener implements, and the context it runs in.

A service is found through the `pforte.services` entry-point group. The supervisor asks each
service class for its *view* of a `ProxyConfig` — a frozen, comparable value holding only what
that service needs (None: the service should not run). Views are diffed; a service is started,
reconfigured with its new view, or stopped only when its own view changed.

Rules for implementations:
- `reconfigure()` keeps established connections, calls and sessions alive. When the bind
  address/port is unchanged it swaps immutable route tables in place and does not rebind.
- Protocol parsing lives in sans-IO modules beside the service (no sockets, time passed in).
- `stats()` returns plain JSON data; numbers become Prometheus metrics (see `proxyd.metrics`).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from proxyd.access import AccessList
    from proxyd.config import ProxyConfig
    from proxyd.statedir import StateDir
    from proxyd.tls import CertStore


class ServiceError(RuntimeError):
    """A service could not start or apply a view; the message says what and, if known, how to fix."""


@dataclass
class ServiceContext:
    """What the daemon gives every service."""

    state: StateDir
    certs: CertStore
    access: AccessList
    lookup: Callable[[str], Service | None] = field(default=lambda name: None)

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

    def stats(self) -> dict[str, Any]:
        """JSON-able state: {'listeners': [...], 'counters': {...}, 'gauges': {...}, ...}."""
        return {}
