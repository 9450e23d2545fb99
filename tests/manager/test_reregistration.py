"""A registration URL never silently replaces a registered agent: it is refused (409, logged, the
URL stays unused) until an admin allows re-registration on the proxy; the page says who holds the key."""

from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.usefixtures("db")


def make_proxy():  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    p = Proxy(name="held", fqdn="held.example.com")
    p.full_clean()
    p.save()
    return p


def register(token: str, source: str = "127.0.0.1"):  # type: ignore[no-untyped-def]
    from django.test import Client

    # over TLS: from an address other than loopback the proxy API takes nothing over plain http
    return Client(REMOTE_ADDR=source).post("/api/v1/register/", {"token": token, "hostname": "edge-1",
                                                                 "version": "t"}, content_type="application/json",
                                           secure=True)


def config_status(key: str) -> int:
    from django.test import Client

    return Client(HTTP_AUTHORIZATION=f"Bearer {key}").get("/api/v1/proxy/config").status_code


def test_second_registration_is_refused_until_an_admin_allows_it(admin_client, caplog) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Heartbeat, Proxy, Registration

    p = make_proxy()
    _, first = Registration.create_for(p)
    r = register(first, "192.0.2.10")
    assert r.status_code == 201
    key = r.json()["api_key"]
    Heartbeat.objects.create(proxy=p, source="192.0.2.11", applied_revision=p.active_revision.number)

    second_reg, second = Registration.create_for(p)
    with caplog.at_level(logging.WARNING, logger="manager.api"):
        refused = register(second, "198.51.100.7")
    assert refused.status_code == 409
    assert "already has a registered agent" in refused.json()["detail"]
    assert "198.51.100.7" in caplog.text and "re-registration is not allowed" in caplog.text
    assert config_status(key) == 200  # the running agent keeps its key
    second_reg.refresh_from_db()
    assert second_reg.used is None  # and the URL is not spent: it works once an admin allows it

    page = admin_client.get(f"/proxies/{p.pk}/").content.decode()
    holder = Proxy.objects.get(pk=p.pk)
    assert holder.api_key_prefix in page and key.startswith(holder.api_key_prefix)
    assert "192.0.2.10" in page and "edge-1" in page  # registered from, host name
    assert "192.0.2.11" in page  # last seen from
    assert "refused: a registration URL does not replace this agent" in page

    with caplog.at_level(logging.WARNING, logger="manager.access"):
        assert admin_client.post(f"/proxies/{p.pk}/reregistration/", {"allow": "1"}).status_code == 302
    assert "user dev-admin allowed re-registration of proxy held" in caplog.text
    assert "<strong>allowed</strong>" in admin_client.get(f"/proxies/{p.pk}/").content.decode()

    taken = register(second, "198.51.100.7")
    assert taken.status_code == 201
    new_key = taken.json()["api_key"]
    assert config_status(key) == 401 and config_status(new_key) == 200
    holder = Proxy.objects.get(pk=p.pk)
    assert holder.api_key_from == "198.51.100.7" and not holder.reregistration_allowed  # one use only

    _, third = Registration.create_for(p)
    assert register(third).status_code == 409


def test_an_admin_can_take_the_permission_back(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Registration

    p = make_proxy()
    _, first = Registration.create_for(p)
    assert register(first).status_code == 201
    admin_client.post(f"/proxies/{p.pk}/reregistration/", {"allow": "1"})
    admin_client.post(f"/proxies/{p.pk}/reregistration/", {"allow": "0"})
    _, second = Registration.create_for(p)
    assert register(second).status_code == 409


def test_a_settings_save_keeps_the_agent_fields(admin_client) -> None:  # type: ignore[no-untyped-def]
    """The edit form saves a Proxy loaded before the registration: the agent fields stay as registered."""
    from manager.proxies.models import Proxy, Registration

    p = make_proxy()
    stale = Proxy.objects.get(pk=p.pk)
    _, token = Registration.create_for(p)
    assert register(token).status_code == 201
    stale.sip_mode = "udp"
    stale.save()
    fresh = Proxy.objects.get(pk=p.pk)
    assert fresh.api_key_hash and fresh.api_key_prefix and fresh.api_key_from == "127.0.0.1"
