"""The manager's /healthz, /readyz and /metrics: real requests, promtool on the scrape."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.usefixtures("db")


def test_health_and_readiness() -> None:
    from django.test import Client

    c = Client(REMOTE_ADDR="192.0.2.9")  # a load balancer elsewhere: no login, no token
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json() == {"status": "ready"}


def test_readiness_names_the_database_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import OperationalError, connection
    from django.test import Client

    def broken(*a, **kw):  # type: ignore[no-untyped-def]  # a database that cannot be opened
        raise OperationalError("unable to open database file")

    monkeypatch.setattr(connection, "cursor", broken)
    r = Client().get("/readyz")
    assert r.status_code == 503 and "database: OperationalError: unable to open database file" in r.json()["reason"]


def test_metrics_count_real_requests_and_pass_promtool(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.test import Client

    from manager.observe import REGISTRY
    from manager.proxies.models import Proxy, Registration

    names = [("pforte_manager_registration_attempts_total", {"outcome": "registered"}),
             ("pforte_manager_registration_attempts_total", {"outcome": "unknown"}),
             ("pforte_manager_heartbeats_received_total", {}), ("pforte_manager_config_revisions_served_total", {}),
             ("pforte_manager_login_failures_total", {}),
             ("pforte_manager_http_request_duration_seconds_count", {"view": "api-config"})]
    before = [REGISTRY.get_sample_value(n, lb) or 0.0 for n, lb in names]
    p = Proxy(name="m1", fqdn="m1.example.com")
    p.full_clean()
    p.save()
    _, token = Registration.create_for(p)
    c = Client()
    c.post("/api/v1/register/", {"token": "nope"}, content_type="application/json")
    key = c.post("/api/v1/register/", {"token": token}, content_type="application/json").json()["api_key"]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert c.get("/api/v1/proxy/config", **auth).status_code == 200
    assert c.post("/api/v1/proxy/heartbeat", {"applied_revision": 1}, content_type="application/json",
                  **auth).status_code == 200
    c.post("/accounts/login/", {"username": "nobody", "password": "wrong-password"})
    after = [REGISTRY.get_sample_value(n, lb) or 0.0 for n, lb in names]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1.0] * len(names)
    text = c.get("/metrics").content.decode()
    for line in ('pforte_manager_registration_attempts_total{outcome="expired_or_used"}',
                 'pforte_manager_proxies{status="Online"} 1.0', 'pforte_manager_proxies{status="Offline"} 0.0',
                 "pforte_manager_longpoll_waiters 0.0"):
        assert line in text, line
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by .ci/run"
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout.strip() == "" and lint.stderr.strip() == "", lint.stdout + lint.stderr

    # from elsewhere: the token, or nothing
    other = Client(REMOTE_ADDR="192.0.2.9")
    assert other.get("/metrics").status_code == 403
    monkeypatch.setenv("PFORTE_METRICS_TOKEN", "scrape-secret")
    assert other.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert other.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
