"""A failing `proxyd exposure` self-test, as the heartbeat carries it, on the proxy's page."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.usefixtures("db")


def test_a_degraded_service_makes_the_proxy_degraded_and_shows_on_its_page(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Heartbeat, Proxy

    p = Proxy(name="edge", fqdn="edge.example.com")
    p.full_clean()
    p.save()
    applied = p.active_revision.number if p.active_revision else None
    Heartbeat.objects.create(proxy=p, applied_revision=applied, services={"http": {"state": "running"}})
    assert p.status() == ("Online", "") and p.exposure_failures() == []
    assert b"No failing probe reported" in admin_client.get(f"/proxies/{p.pk}/").content
    why = "exposure self-test: router https://127.0.0.1:443 path '/inst1/..;/' expected 400, got forwarded"
    Heartbeat.objects.create(proxy=p, applied_revision=applied,
                             services={"http": {"state": "degraded", "degraded": why}, "sip": {"state": "running"}})
    assert p.status() == ("Degraded", why)
    page = admin_client.get(f"/proxies/{p.pk}/").content.decode()
    assert 'id="exposure"' in page and "expected 400, got forwarded" in page
