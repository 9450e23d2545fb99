"""XMPP passthrough: 5222 routed by the stream header's `to`, 5223 (XEP-0368) by TLS SNI.

Neither listener terminates TLS; see `relay.py` for the per-connection logic and
`stream_header.py` / `client_hello.py` for the sans-IO peekers. `reconfigure()` with unchanged
ports swaps the immutable route table in place: sessions already relaying keep their backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxyd.config import ProxyConfig
from proxyd.events import Limiter, emit
from proxyd.service import Service, ServiceError
from proxyd.stats import ServiceStats
from services.xmpp.relay import Session
from services.xmpp.routes import Route, RouteTable


@dataclass(frozen=True)
class XmppView:
    bind: str
    port: int
    direct_tls_port: int
    routes: RouteTable


class Listener:
    """One listening socket and the sessions it accepted."""

    def __init__(self, service: XmppService, kind: str):
        self.service, self.kind = service, kind
        self.server: asyncio.Server | None = None
        self.sessions: set[Session] = set()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.server = await loop.create_server(lambda: Session(self), host, port, reuse_address=True,
                                                   reuse_port=self.service.ctx.reuse_port)
        except OSError as exc:
            raise ServiceError(f"xmpp: cannot listen on {host}:{port} ({exc.strerror}); "
                               f"choose a free services.xmpp port") from exc

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class XmppService(Service):
    name = "xmpp"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.view_: XmppView | None = None
        self.routes = RouteTable()
        self.listeners: dict[str, Listener] = {}
        self._retired: list[Listener] = []  # closed listeners whose sessions still relay
        self.counters: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.active: Counter[str] = Counter()
        #: Test hook: called with (session, direction, chunk) for every relayed chunk; the first
        #: client chunk of a session is the replayed peek buffer. None in production.
        self.tap: Callable[[Session, str, bytes], None] | None = None
        self.refusal_lines = Limiter()  # a client can open refused connections as fast as it likes

    @classmethod
    def view(cls, cfg: ProxyConfig) -> XmppView | None:
        x = cfg.services.xmpp
        if not (cfg.proxy.enabled and x.enabled):
            return None
        domains: list[tuple[str, Route]] = []
        default = None
        for inst in cfg.instances:
            if inst.xmpp is None:
                continue
            direct = inst.direct_tls_target  # one place derives the default: proxyd.config
            assert direct is not None
            route = Route(inst.name, inst.xmpp.host, inst.xmpp.port, direct.host, direct.port,
                          inst.xmpp_proxy_protocol)
            domains += [(d.lower().rstrip("."), route) for d in inst.xmpp_domains]
            if inst.xmpp_default:
                default = route
        return XmppView(cfg.bind_address, x.port, x.direct_tls_port, RouteTable(tuple(domains), default))

    async def start(self, view: XmppView) -> None:
        self.routes = view.routes
        starttls, direct = Listener(self, "starttls"), Listener(self, "direct_tls")
        await starttls.start(view.bind, view.port)
        try:
            await direct.start(view.bind, view.direct_tls_port)
        except ServiceError:
            starttls.close()
            raise
        self.listeners = {"starttls": starttls, "direct_tls": direct}
        self.view_ = view
        self.log.info("event=xmpp_started bind=%s port=%d direct_tls_port=%d domains=%d",
                      view.bind, view.port, view.direct_tls_port, len(view.routes.domains))

    async def reconfigure(self, view: XmppView) -> None:
        old = self.view_
        if old is None:
            await self.start(view)
            return
        # Rebind only a listener whose address changed; new sockets first, so a failure keeps
        # the old ones. Sessions of a replaced listener keep relaying until they end.
        fresh: dict[str, Listener] = {}
        try:
            for kind, port, old_port in (("starttls", view.port, old.port),
                                         ("direct_tls", view.direct_tls_port, old.direct_tls_port)):
                if (view.bind, port) != (old.bind, old_port):
                    fresh[kind] = Listener(self, kind)
                    await fresh[kind].start(view.bind, port)
        except ServiceError:
            for listener in fresh.values():
                listener.close()
            raise
        self._retired = [li for li in self._retired if li.sessions]
        for kind, listener in fresh.items():
            self.listeners[kind].close()
            self._retired.append(self.listeners[kind])
            self.listeners[kind] = listener
        self.routes, self.view_ = view.routes, view
        self.log.info("event=xmpp_reconfigured domains=%d rebound=%s",
                      len(view.routes.domains), ",".join(fresh) or "-")

    async def stop(self, timeout: float) -> None:
        listeners = [*self.listeners.values(), *self._retired]
        self._retired = []
        for listener in listeners:
            listener.close()
        sessions = [s for listener in listeners for s in listener.sessions]
        for s in sessions:
            s.close()  # flushes what is buffered, then closes both sockets (FIN, not RST)
        deadline = asyncio.get_running_loop().time() + timeout
        while any(s.client and not s.client.is_closing() for s in sessions):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        for listener in listeners:
            if listener.server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(listener.server.wait_closed(), 1.0)
        self.listeners, self.view_ = {}, None
        self.log.info("event=xmpp_stopped sessions_closed=%d", len(sessions))

    # -------------------------------------------------------------- accounting
    def session_started(self, session: Session, route: Route) -> None:
        self.active[route.instance] += 1
        self.counters["sessions"] += 1
        self.counters[f"sessions_{session.listener.kind}"] += 1
        self.log.info("event=xmpp_session_open listener=%s client=%s instance=%s",
                      session.listener.kind, session.peer[0], route.instance)

    def session_ended(self, session: Session, route: Route) -> None:
        self.active[route.instance] -= 1
        self._end(logging.INFO, session, route.instance, "relayed", {})

    def refused(self, reason: str, session: Session, fields: dict[str, Any]) -> None:
        self.refusals[reason] += 1
        if self.refusal_lines.allow(self.log, self.name):
            self._end(logging.WARNING, session, fields.pop("instance", None), "refused", {"reason": reason, **fields})

    def _end(self, level: int, session: Session, instance: str | None, outcome: str, extra: dict[str, Any]) -> None:
        """The session's one end event (issue #22 §4): relayed ones always, refused ones within the flood limit."""
        emit(self.log, level, "xmpp_session_end", {
            "service": "xmpp", "client": f"{session.peer[0]}:{session.peer[1]}", "listener": session.listener.kind,
            "instance": instance or "-", "outcome": outcome, "bytes_in": session.bytes_up,
            "bytes_out": session.bytes_down, "duration": f"{time.monotonic() - session.opened:.3f}", **extra})

    def count_bytes(self, session: Session, direction: str, data: bytes) -> None:
        self.counters[f"bytes_{direction}"] += len(data)
        if direction == "client_to_backend":
            session.bytes_up += len(data)
        else:
            session.bytes_down += len(data)
        if self.tap is not None:
            self.tap(session, direction, data)

    def _instances(self) -> set[str]:
        routes = [r for _, r in self.routes.domains] + ([self.routes.default] if self.routes.default else [])
        return {r.instance for r in routes}

    def report(self) -> ServiceStats:
        v = self.view_
        return ServiceStats(
            listeners=[f"tcp:{v.bind}:{v.port}", f"tcp:{v.bind}:{v.direct_tls_port}"] if v else [],
            counters={"sessions": self.counters["sessions"],
                      "sessions_starttls": self.counters["sessions_starttls"],
                      "sessions_direct_tls": self.counters["sessions_direct_tls"],
                      "bytes_client_to_backend": self.counters["bytes_client_to_backend"],
                      "bytes_backend_to_client": self.counters["bytes_backend_to_client"]},
            gauges={"active_sessions": sum(self.active.values()),
                    "connections": sum(len(li.sessions) for li in self.listeners.values())},
            breakdowns={
                # every routed instance, 0 included: a dashboard shows it before its first session
                "by_instance": {name: {"active_sessions": self.active.get(name, 0)}
                                for name in sorted(self._instances() | set(self.active))},
                "by_reason": {reason: {"refusals": n} for reason, n in self.refusals.items()},
            },
        )
