"""`services.web`: the HTTPS path router and the limits of every HTTP listener."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from proxyd.config.reader import _fields, _Reader

HTTP = ("http", "https")


@dataclass(frozen=True)
class WebLimits:
    """What one client may hold of the HTTP listeners (router, applications, provisioning): each
    number bounds state a client can create (docs/security.md, HTTP limits)."""

    #: client connections one IP address may hold open at once (a browser opens 6 per origin: 256
    #: leaves room for a few dozen users behind one NAT address); more are closed at accept and logged
    connections_per_address: int = 256
    #: client connections of all HTTP listeners together; the effective cap is also at most half of
    #: the process's file limit less a reserve of 1,024, so accept() never hits EMFILE
    connections_total: int = 50_000
    #: seconds a TLS client has from accept to the end of its handshake (asyncio's default is 60);
    #: applies to listeners bound after the change
    tls_handshake_timeout: float = 10.0
    #: seconds a request head has from its first byte (or from connect) until it is whole; then 408
    head_timeout: float = 10.0
    #: seconds a keep-alive connection may sit idle between requests; also the longest stall of a body
    idle_timeout: float = 60.0
    #: seconds a request body may take before the minimum body rate applies
    body_grace: float = 10.0
    #: bytes per second a request body must average after `body_grace`; slower gets 408 (slow POST)
    min_body_rate: int = 1024
    #: requests one backend may have in flight at once (each holds one backend connection)
    backend_connections: int = 1024
    #: requests that may wait, per backend, for one of its `backend_connections`; beyond, 503 with Retry-After
    backend_queue: int = 256
    #: seconds a request may wait in a backend's queue; then 503 with Retry-After
    backend_queue_timeout: float = 5.0
    #: the Retry-After seconds of a 503 for a full backend queue
    retry_after: int = 1


@dataclass(frozen=True)
class WebService:
    #: `web_and_rest` (`/<instance>` and `/<instance>/services`), `rest_only` (only `/<instance>/services`), `off`
    mode: str = "web_and_rest"
    #: the HTTPS router's TCP port
    port: int = 443
    #: where the bare `/` redirects; null: 404
    redirect_url: str | None = None
    #: seconds a backend (instance web/REST, application, provisioning) may take to start its answer; then 504
    upstream_timeout: float = 60.0
    #: connection, deadline and backend-queue limits of every HTTP listener (router, applications, provisioning)
    limits: WebLimits = field(default_factory=WebLimits)


def _parse_web(r: _Reader, raw: Any, p: str) -> WebService:
    w = r.obj(raw, p, _fields(WebService))
    return WebService(
        mode=r.field(w, p, WebService, "mode", lambda v, q: r.choice(v, q, ("web_and_rest", "rest_only", "off"))),
        port=r.field(w, p, WebService, "port", r.port),
        redirect_url=r.field(w, p, WebService, "redirect_url", lambda v, q: r.url(v, q, schemes=HTTP, nullable=True)),
        upstream_timeout=r.field(w, p, WebService, "upstream_timeout", lambda v, q: r.number(v, q, 1, 3600)),
        limits=_parse_web_limits(r, w.get("limits", {}), f"{p}.limits"),
    )


def _parse_web_limits(r: _Reader, raw: Any, p: str) -> WebLimits:
    d = r.obj(raw, p, _fields(WebLimits))

    def num(key: str, lo: float, hi: float) -> Any:
        return r.field(d, p, WebLimits, key, lambda v, q: r.number(v, q, lo, hi))

    def count(key: str, lo: int, hi: int) -> Any:
        return r.field(d, p, WebLimits, key, lambda v, q: r.integer(v, q, lo, hi))

    return WebLimits(
        connections_per_address=count("connections_per_address", 1, 1_000_000),
        connections_total=count("connections_total", 64, 1_000_000),
        tls_handshake_timeout=num("tls_handshake_timeout", 1, 300),
        head_timeout=num("head_timeout", 1, 300),
        idle_timeout=num("idle_timeout", 1, 3600),
        body_grace=num("body_grace", 0, 3600),
        min_body_rate=count("min_body_rate", 1, 10**9),
        backend_connections=count("backend_connections", 1, 100_000),
        backend_queue=count("backend_queue", 0, 100_000),
        backend_queue_timeout=num("backend_queue_timeout", 0.1, 300),
        retry_after=count("retry_after", 1, 3600),
    )
