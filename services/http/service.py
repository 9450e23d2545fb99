"""The http service: the web listener (path router) and one listener per application.

The view is the part of the config the router needs. On reconfigure, listeners whose address,
port and TLS setting are unchanged stay bound and only get a new route table; connections in
flight keep going and pick the new table up with their next request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from proxyd.config import ProxyConfig, WebLimits
from proxyd.events import HttpEvents
from proxyd.service import Service
from proxyd.stats import ServiceStats
from proxyd.tls_accept import create_tls_server
from services.http import http1
from services.http.authority import Names
from services.http.limits import ConnectionGate, configure
from services.http.proxy import UPSTREAM_TIMEOUT, ClientConnection, Clock, Listener, Stats, sweep
from services.http.routes import AppTable, Backend, Router, WebTable
from services.http.upstream import Pools

SWEEP_INTERVAL = 0.5  # timeouts are deadlines checked this often, not a timer per request


@dataclass(frozen=True)
class ListenerSpec:
    host: str
    port: int
    tls: bool


@dataclass(frozen=True)
class HttpView:
    listeners: tuple[tuple[ListenerSpec, Router], ...]
    upstream_timeout: float = UPSTREAM_TIMEOUT
    names: Names | None = None  # the authorities requests may address (services/http/authority.py)
    limits: WebLimits = WebLimits()


class HttpService(Service):
    name = "http"

    @classmethod
    def view(cls, cfg: ProxyConfig) -> HttpView | None:
        host = cfg.bind_address
        out: list[tuple[ListenerSpec, Router]] = []
        web = cfg.services.web
        if web.mode != "off":
            instances = tuple((i.name, Backend.from_url(i.web)) for i in cfg.instances if i.web)
            modes = tuple((i.name, i.web_prefix_mode) for i in cfg.instances if i.web_prefix_mode != "rewrite")
            out.append((ListenerSpec(host, web.port, True), WebTable(web.mode, web.redirect_url, instances, modes)))
        for app in cfg.applications:
            table = AppTable(app.public_prefix, Backend.from_url(app.upstream, app.verify_upstream), app.name)
            out.append((ListenerSpec(host, app.port, app.tls), table))
        names = Names(cfg.proxy.fqdn, host, cfg.proxy.aliases)
        return HttpView(tuple(out), web.upstream_timeout, names, web.limits) if out else None

    async def start(self, view: HttpView) -> None:
        self.pools = Pools(view.limits.backend_connections, view.limits.backend_queue)
        self.stats_ = Stats()
        self.servers: dict[ListenerSpec, asyncio.Server] = {}
        self.listeners: dict[ListenerSpec, Listener] = {}
        self.conns: set[ClientConnection] = set()
        self.gate = ConnectionGate(service=self.name)
        self.events = HttpEvents(self.name)
        self.clock = Clock(asyncio.get_running_loop().time())
        self.sweeper = self.every(SWEEP_INTERVAL, self._sweep, "connection deadlines sweep")
        await self.reconfigure(view)
        if http1._chead is None:  # same decisions (the Python reference), a fraction of the speed
            self.log.warning("event=http_slow_path service=%s reason=services.http._chead_not_built "
                             "fix='make venv'", self.name)

    async def reconfigure(self, view: HttpView) -> None:
        self.limits = view.limits
        configure(self.gate, view.limits)
        self.pools.per_backend, self.pools.queue = view.limits.backend_connections, view.limits.backend_queue
        wanted = dict(view.listeners)
        for spec in [s for s in self.servers if s not in wanted]:
            self.servers.pop(spec).close()
            self.listeners.pop(spec, None)
        for spec, table in wanted.items():
            if spec in self.listeners:
                self.listeners[spec].router = table  # swap in place: the next request on any connection sees it
                self.listeners[spec].upstream_timeout = view.upstream_timeout
                self.listeners[spec].names = view.names
                self.listeners[spec].limits = view.limits
            else:
                listener = self._listener(spec, table, view.upstream_timeout, view.names)
                self.servers[spec] = await self._listen(spec, listener)
                self.listeners[spec] = listener

    def _listener(self, spec: ListenerSpec, table: Router, upstream_timeout: float, names: Names | None) -> Listener:
        access, name = self.ctx.access, self.name
        listener = Listener(table, self.pools, self.stats_, spec.tls, lambda ip: access.allowed(ip, name),
                            self.conns, self.clock, upstream_timeout, names, self.gate, self.limits, self.events)
        if not spec.tls:
            listener.acme_tokens = self.ctx.acme_tokens
        return listener

    async def _listen(self, spec: ListenerSpec, listener: Listener) -> asyncio.Server:
        if spec.tls:
            return await create_tls_server(lambda: ClientConnection(listener), spec.host, spec.port,
                                           self.ctx.certs.server_context(alpn=["http/1.1"]), service=self.name,
                                           handshake_timeout=self.limits.tls_handshake_timeout, gate=self.gate,
                                           alpn_challenges=self.ctx.certs.alpn_challenges,
                                           reuse_address=True, reuse_port=self.ctx.reuse_port, backlog=1024)
        loop = asyncio.get_running_loop()
        return await loop.create_server(lambda: ClientConnection(listener), spec.host, spec.port,
                                        reuse_address=True, reuse_port=self.ctx.reuse_port, backlog=1024)

    def _sweep(self, now: float) -> None:
        sweep(self.conns, self.clock, asyncio.get_running_loop().time(), SWEEP_INTERVAL)
        self.events.flush()  # served requests' log lines, twice a second (proxyd/events.py)

    async def stop(self, timeout: float) -> None:
        for srv in self.servers.values():
            srv.close()
        loop = asyncio.get_running_loop()
        for conn in list(self.conns):
            conn.shared.draining = True
            conn.drain()
        deadline = loop.time() + timeout
        # connections leave the set from transport callbacks; a short poll only while shutting down
        while self.conns and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        for conn in list(self.conns):
            conn.abort()
        self.sweeper.cancel()
        self.events.flush()
        self.servers.clear()
        self.listeners.clear()
        self.pools.close()

    def report(self) -> ServiceStats:
        return ServiceStats(
            listeners=[f"{'https' if s.tls else 'http'}://{s.host}:{s.port}" for s in self.servers],
            counters={**dict(self.stats_.counters), **self.events.counters,
                      "connections_refused": self.gate.refused,
                      "backend_saturated": self.pools.saturated,
                      "backend_queued": self.pools.queued,
                      "backend_connects": self.pools.connects,
                      "backend_connect_errors": self.pools.connect_errors},
            gauges={"active_connections": len(self.conns), "idle_backend_connections": self.pools.idle_count,
                    "connection_limit_per_address": self.gate.per_address,
                    "connection_limit_total": self.gate.budget.total,
                    "backend_queue_waiting": self.pools.waiting_count,
                    "backend_connection_limit": self.pools.per_backend,
                    "backend_queue_limit": self.pools.queue,
                    "tls_handshake_timeout_seconds": self.limits.tls_handshake_timeout,
                    "head_timeout_seconds": self.limits.head_timeout,
                    "idle_timeout_seconds": self.limits.idle_timeout,
                    "min_body_rate_bytes": self.limits.min_body_rate},
            histograms={"upstream_connect_seconds": self.pools.connect_seconds.to_json(),
                        "upstream_first_byte_seconds": self.stats_.first_byte.to_json(),
                        "request_duration_seconds": self.stats_.duration.to_json()},
        )
