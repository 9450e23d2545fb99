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


def test_a_failed_service_and_a_service_error_make_the_proxy_degraded_and_show_per_service(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Heartbeat, Proxy

    p = Proxy(name="edge2", fqdn="edge2.example.com")
    p.full_clean()
    p.save()
    applied = p.active_revision.number if p.active_revision else None
    assert b"No heartbeat with service states yet" in admin_client.get(f"/proxies/{p.pk}/").content
    bind = "cannot bind 0.0.0.0:5061: address in use (hint: another process holds it)"
    Heartbeat.objects.create(proxy=p, applied_revision=applied, services={
        "http": {"state": "running"}, "sip": {"state": "failed", "last_error": bind},
        "certificate": {"degraded": []}})
    assert p.service_states() == [("http", "running", ""), ("sip", "failed", bind)]
    assert p.status() == ("Degraded", f"service sip: failed to start: {bind}")
    page = admin_client.get(f"/proxies/{p.pk}/").content.decode()
    assert 'id="service-states"' in page and "address in use" in page
    kept = "revision 8: media port range 30000-30010 overlaps the SIP port"
    Heartbeat.objects.create(proxy=p, applied_revision=applied, services={
        "http": {"state": "running"}, "media": {"state": "running", "last_error": kept}})
    assert p.status() == ("Degraded", f"service media: {kept}")
    Heartbeat.objects.create(proxy=p, applied_revision=applied, services={"media": {"state": "running"}})
    assert p.status() == ("Online", "")
