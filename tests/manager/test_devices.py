"""Per-instance phones and their provisioning URLs (issue 7, manager side), through the UI views."""

from __future__ import annotations

import csv
import io

import pytest

from services.provisioning.token import decode_token

pytestmark = pytest.mark.usefixtures("db")


def test_device_urls_per_proxy_csv_and_key_change(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Instance, Proxy, new_provisioning_key

    edge = Proxy(name="edge", fqdn="edge.example.com")
    edge.full_clean()
    edge.save()
    lan = Proxy(name="lan", fqdn="10.1.1.2", provisioning_mode="http_and_https", network_mode="manual",
                network_interface="eth1", network_address="10.1.1.2/24", network_gateway="10.1.1.1", network_table=7)
    lan.full_clean()
    lan.save()
    inst = Instance.objects.create(name="mycompany", provisioning="http://10.0.0.5/prov/{mac}")
    r = admin_client.post(f"/instances/{inst.pk}/devices/", {"mac": "08:c2:5a:4f:03:21", "label": "reception"})
    assert r.status_code == 302
    bad = admin_client.post(f"/instances/{inst.pk}/devices/", {"mac": "nope", "label": ""})
    assert b"12 hex digits" in bad.content

    page = admin_client.get(f"/instances/{inst.pk}/devices/").content.decode()
    assert "https://10.1.1.2:8884/p/mycompany/08C25A4F0321" in page
    assert "http://10.1.1.2:8880/p/mycompany/08C25A4F0321" in page
    rows = list(csv.DictReader(io.StringIO(admin_client.get(f"/instances/{inst.pk}/devices.csv")
                                           .content.decode())))
    assert {(r["proxy"], r["mac"]) for r in rows} == {("edge", "08C25A4F0321"), ("lan", "08C25A4F0321")}
    token_url = next(r["url"] for r in rows if r["proxy"] == "edge")
    assert token_url.startswith("https://edge.example.com:8884/p/")
    token = token_url.rsplit("/", 1)[1]
    assert decode_token(edge.provisioning_key, token) == ("mycompany", "08C25A4F0321")

    edge.provisioning_key = new_provisioning_key()  # every earlier URL changes
    edge.save()
    rows = list(csv.DictReader(io.StringIO(admin_client.get(f"/instances/{inst.pk}/devices.csv")
                                           .content.decode())))
    assert next(r["url"] for r in rows if r["proxy"] == "edge") != token_url


def test_key_rotation_goes_through_a_confirmation_page(admin_client) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    p = Proxy(name="edge", fqdn="edge.example.com")
    p.full_clean()
    p.save()
    key = p.provisioning_key
    form = {f: getattr(p, f) for f in ("name", "fqdn", "bind", "sip_mode", "sip_udp_port", "sip_tls_port",
                                       "sip_rate_limit", "media_mode", "media_port_min", "media_port_max",
                                       "provisioning_mode", "provisioning_https_port", "provisioning_http_port",
                                       "xmpp_port", "xmpp_direct_tls_port", "web_mode", "web_port",
                                       "web_upstream_timeout", "tls_key_type", "tls_mode", "acme_challenge",
                                       "acme_http_port", "media_idle_timeout",
                                       "media_setup_timeout", "media_max_streams", "media_max_streams_per_source",
                                       "media_max_streams_per_instance")}
    form.update(enabled="on", xmpp_enabled="on", regenerate_provisioning_key="on")  # the old checkbox: ignored
    assert admin_client.post(f"/proxies/{p.pk}/edit/", form).status_code == 302
    p.refresh_from_db()
    assert p.provisioning_key == key  # saving settings keeps the key
    confirm = admin_client.get(f"/proxies/{p.pk}/provisioning-key/").content.decode()
    assert "Every provisioning URL issued so far for this proxy stops working at once." in confirm
    p.refresh_from_db()
    assert p.provisioning_key == key  # looking at the confirmation changes nothing
    r = admin_client.post(f"/proxies/{p.pk}/provisioning-key/", {"confirm": "1"}, follow=True)
    p.refresh_from_db()
    assert p.provisioning_key != key
    assert "New provisioning key made" in r.content.decode()
