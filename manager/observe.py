"""The manager's own health and metrics: `/healthz` (the process answers), `/readyz` (and its
database does, else 503 with the reason) and `/metrics` (Prometheus text, prometheus_client).

`/metrics` is open on loopback; from elsewhere it needs `Authorization: Bearer $PFORTE_METRICS_TOKEN`
(or PFORTE_METRICS_PUBLIC=1). Request counts and durations are labelled by URL pattern name, a
bounded set: never a path, address or key.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.contrib.auth.signals import user_login_failed
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from manager.proxies.permissions import PUBLIC, declares, key_transport_ok

REGISTRY = CollectorRegistry()
REQUESTS = Counter("pforte_manager_http_requests", "HTTP requests answered, by URL pattern and status class",
                   ["view", "code"], registry=REGISTRY)
DURATION = Histogram("pforte_manager_http_request_duration_seconds", "Time to answer a request (a long-poll "
                     "includes its wait)", ["view"], registry=REGISTRY,
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30, 60, 90))
HEARTBEATS = Counter("pforte_manager_heartbeats_received", "Heartbeats accepted from agents", registry=REGISTRY)
REVISIONS_SERVED = Counter("pforte_manager_config_revisions_served", "Config revisions sent to agents (200, "
                           "not 304)", registry=REGISTRY)
REGISTRATIONS = Counter("pforte_manager_registration_attempts", "Agent registration attempts by outcome",
                        ["outcome"], registry=REGISTRY)
LOGIN_FAILURES = Counter("pforte_manager_login_failures", "Failed logins to the UI and admin", registry=REGISTRY)
REGISTRATION_OUTCOMES = {201: "registered", 400: "invalid", 403: "refused", 404: "unknown", 409: "conflict",
                         410: "expired_or_used"}
VIEWS = ("api-config", "api-heartbeat", "api-register", "other")
for outcome in (*REGISTRATION_OUTCOMES.values(), "other"):
    REGISTRATIONS.labels(outcome)
STATUSES = ("Online", "Degraded", "Offline", "Never connected", "Disabled")


class _Live:
    """Read at scrape time: proxies by status, long-polls parked in this process."""

    def collect(self) -> Any:
        from manager.proxies.feed import FEED
        from manager.proxies.models import Proxy

        by = GaugeMetricFamily("pforte_manager_proxies", "Proxies by status", labels=["status"])
        counts = dict.fromkeys(STATUSES, 0)
        for proxy in Proxy.objects.all():
            status = "Disabled" if not proxy.enabled else proxy.status()[0]
            counts[status] = counts.get(status, 0) + 1
        for status, n in counts.items():
            by.add_metric([status], n)
        yield by
        yield GaugeMetricFamily("pforte_manager_longpoll_waiters", "Config long-polls waiting in this process",
                                value=FEED.waiting())


REGISTRY.register(_Live())
user_login_failed.connect(lambda **kw: LOGIN_FAILURES.inc(), weak=False, dispatch_uid="pforte-login-failures")


def _observe(request: HttpRequest, response: HttpResponse, started: float) -> None:
    match = request.resolver_match
    count((match.url_name if match else None) or "other", response.status_code, started)


def count(view: str, code: int, started: float) -> None:
    """One answered request in the metrics: by Django's middleware, and by the agents' ASGI front
    (agent_front.py) for the polls and heartbeats it answers without Django."""
    REQUESTS.labels(view, f"{code // 100}xx").inc()
    DURATION.labels(view).observe(time.perf_counter() - started)
    if view == "api-heartbeat" and code == 200:
        HEARTBEATS.inc()
    elif view == "api-config" and code == 200:
        REVISIONS_SERVED.inc()
    elif view == "api-register":
        REGISTRATIONS.labels(REGISTRATION_OUTCOMES.get(code, "other")).inc()


def request_metrics(get_response: Callable[..., Any]) -> Callable[..., Any]:
    """Middleware (sync and async: the config long-poll is an async view and must stay one)."""
    if iscoroutinefunction(get_response):
        async def middleware(request: HttpRequest) -> HttpResponse:
            started = time.perf_counter()
            response = await get_response(request)
            _observe(request, response, started)
            return response

        return markcoroutinefunction(middleware)

    def sync_middleware(request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = get_response(request)
        _observe(request, response, started)
        return response

    return sync_middleware


request_metrics.sync_capable = True  # type: ignore[attr-defined]
request_metrics.async_capable = True  # type: ignore[attr-defined]


@declares(PUBLIC)
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers (no database access: a slow database must not get it killed)."""
    return JsonResponse({"status": "ok"})


@declares(PUBLIC)
def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: the database answers a query and is migrated; 503 with the reason otherwise."""
    try:
        with connection.cursor() as c:
            c.execute("SELECT 1 FROM proxies_proxy LIMIT 1")
    except Exception as exc:  # noqa: BLE001 - any database failure means: not ready, say why
        return JsonResponse({"status": "not ready", "reason": f"database: {type(exc).__name__}: {exc}"[:300]},
                            status=503)
    return JsonResponse({"status": "ready"})


@declares(PUBLIC)  # open on loopback, else the configured token: checked here
def metrics(request: HttpRequest) -> HttpResponse:
    token = os.environ.get("PFORTE_METRICS_TOKEN", "")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    allowed = (os.environ.get("PFORTE_METRICS_PUBLIC") == "1"
               or key_transport_ok(False, request.META.get("REMOTE_ADDR"))
               or (token and hmac.compare_digest(given.encode(), token.encode())))
    if not allowed:
        return JsonResponse({"detail": "metrics: loopback only, or Authorization: Bearer <PFORTE_METRICS_TOKEN>"},
                            status=403)
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
