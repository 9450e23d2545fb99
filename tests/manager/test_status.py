"""Live status: Online / Degraded (reason) / Offline / Disabled, the agent's goodbye, the heartbeat
grace, and the polled fragment the pages load (htmx, served from the manager's own static files)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client

pytestmark = pytest.mark.usefixtures("db")


def _registered():  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    p = Proxy(name="edge", fqdn="edge.example.com")
    p.full_clean()
    p.save()
    return p, p.mint_api_key(source="127.0.0.1")


def _beat(c: Client, key: str, **body) -> None:  # type: ignore[no-untyped-def]
    r = c.post("/api/v1/proxy/heartbeat", {"version": "t", "uptime": 1, **body}, content_type="application/json",
               HTTP_AUTHORIZATION=f"Bearer {key}")
    assert r.status_code == 200, r.content


def test_goodbye_then_heartbeat_then_silence_then_switched_off(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Heartbeat, Proxy

    p, key = _registered()
    agent = Client()
    assert p.status() == ("Never connected", "")
    _beat(agent, key, applied_revision=p.active_revision.number)
    assert Proxy.objects.get(pk=p.pk).status() == ("Online", "")
    _beat(agent, key, applied_revision=p.active_revision.number - 1, last_error="sip: port 5061 in use")
    assert Proxy.objects.get(pk=p.pk).status() == ("Degraded", "sip: port 5061 in use")

    assert agent.post("/api/v1/proxy/goodbye").status_code == 401  # no key: nobody says goodbye for it
    r = agent.post("/api/v1/proxy/goodbye", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert r.status_code == 200 and "stopped" in r.json()
    before = p.active_revision.number
    status, reason = Proxy.objects.get(pk=p.pk).status()
    assert status == "Offline" and reason.startswith("proxyd stopped at")
    assert Proxy.objects.get(pk=p.pk).active_revision.number == before  # no new revision for a goodbye
    fragment = admin_client.get(f"/proxies/{p.pk}/status/").content.decode()
    assert 'data-status="Offline"' in fragment and 'hx-trigger="every 2s"' in fragment

    _beat(agent, key, applied_revision=p.active_revision.number)
    assert Proxy.objects.get(pk=p.pk).status() == ("Online", "")
    # silent: Offline after 2.5 intervals, never later than 150 s whatever interval it had
    from django.utils import timezone

    Proxy.objects.filter(pk=p.pk).update(agent_stopped=None)  # only the heartbeats' age counts below
    ago = lambda s: timezone.now() - timedelta(seconds=s)  # noqa: E731
    Heartbeat.objects.filter(proxy=p).update(interval=600, received=ago(151))
    assert Proxy.objects.get(pk=p.pk).status()[0] == "Offline"
    Heartbeat.objects.filter(proxy=p).update(interval=600, received=ago(141))
    assert Proxy.objects.get(pk=p.pk).status()[0] == "Online"
    Heartbeat.objects.filter(proxy=p).update(interval=30, received=ago(76))  # 2.5 x 30 = 75
    assert Proxy.objects.get(pk=p.pk).status()[0] == "Offline"

    Proxy.objects.filter(pk=p.pk).update(enabled=False)
    status, reason = Proxy.objects.get(pk=p.pk).status()
    assert status == "Disabled" and "switched off" in reason
    assert 'data-status="Disabled"' in admin_client.get(f"/proxies/{p.pk}/").content.decode()


def test_pages_poll_with_the_vendored_htmx(admin_client) -> None:  # type: ignore[no-untyped-def]
    p, _ = _registered()
    page = admin_client.get(f"/proxies/{p.pk}/").content.decode()
    assert '/static/vendor/htmx/htmx-2.0.11.min.js' in page and "//unpkg" not in page and "cdn" not in page.lower()
    js = admin_client.get("/static/vendor/htmx/htmx-2.0.11.min.js")
    try:
        assert js.status_code == 200 and b"htmx" in b"".join(js.streaming_content)
    finally:
        js.close()
    listing = admin_client.get("/").content.decode()
    assert 'hx-select="#object-list tbody"' in listing
