"""Applications of a proxy (the /api/*-only exposure of one upstream), edited through the UI views."""

from __future__ import annotations

import html
import json

import pytest

pytestmark = pytest.mark.usefixtures("db")


def test_add_change_and_delete_an_application_publishes_revisions(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Application, Proxy

    proxy = Proxy(name="edge", fqdn="edge.example.com")
    proxy.full_clean()
    proxy.save()
    first = proxy.active_revision.number
    form = {"name": "procurat", "port": "9443", "tls": "on", "public_prefix": "/api/",
            "upstream": "https://p5.school.local:8443/procurat/api/v1/", "verify_upstream": "on"}
    assert admin_client.post(f"/proxies/{proxy.pk}/applications/new/", form).status_code == 302
    app = Application.objects.get(proxy=proxy, name="procurat")
    cfg = json.loads(proxy.active_revision.config_json)
    assert proxy.active_revision.number == first + 1
    assert cfg["applications"] == [{"name": "procurat", "port": 9443, "tls": True, "public_prefix": "/api/",
                                    "upstream": "https://p5.school.local:8443/procurat/api/v1/",
                                    "verify_upstream": True}]
    page = admin_client.get(f"/proxies/{proxy.pk}/").content.decode()
    assert "procurat" in page and "9443" in page

    form.pop("verify_upstream")  # unchecked box
    assert admin_client.post(f"/proxies/{proxy.pk}/applications/{app.pk}/edit/", form).status_code == 302
    assert json.loads(proxy.active_revision.config_json)["applications"][0]["verify_upstream"] is False

    assert admin_client.post(f"/proxies/{proxy.pk}/applications/{app.pk}/delete/").status_code == 302
    assert json.loads(proxy.active_revision.config_json)["applications"] == []


@pytest.mark.parametrize(("change", "field", "text"), [
    ({"port": "443"}, "port", "collides with services.web.port"),
    ({"public_prefix": "api"}, "public_prefix", "starts and ends with '/'"),
    ({"upstream": "ftp://files.local/"}, "upstream", "http"),
])
def test_a_bad_application_is_refused_naming_the_field(admin_client, change, field, text) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Application, Proxy

    proxy = Proxy(name="edge", fqdn="edge.example.com")
    proxy.full_clean()
    proxy.save()
    before = proxy.active_revision.number
    form = {"name": "app", "port": "9443", "tls": "on", "public_prefix": "/api/", "upstream": "https://b.local/v1/",
            **change}
    r = admin_client.post(f"/proxies/{proxy.pk}/applications/new/", form)
    assert r.status_code == 200
    page = html.unescape(r.content.decode())
    assert f'name="{field}"' in page and text in page
    assert not Application.objects.filter(proxy=proxy).exists()
    assert proxy.active_revision.number == before


def test_two_applications_cannot_share_a_port(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    proxy = Proxy(name="edge", fqdn="edge.example.com")
    proxy.full_clean()
    proxy.save()
    form = {"name": "a", "port": "9443", "public_prefix": "/api/", "upstream": "https://b.local/v1/"}
    assert admin_client.post(f"/proxies/{proxy.pk}/applications/new/", form).status_code == 302
    r = admin_client.post(f"/proxies/{proxy.pk}/applications/new/", {**form, "name": "b"})
    assert "collides with applications[0].port" in html.unescape(r.content.decode())
