"""Every form of the UI, submitted with duplicate, empty, too long and malformed values: the answer
is the form again with an error (or a save when the value is fine), never a 500. Django's test
client re-raises a view's exception, so an IntegrityError or a crash fails the test by itself."""

from __future__ import annotations

import html
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("db")

HOSTILE = ["", "x" * 5000, "bad\x00nul", "-1", "99999999999999999999", "1.5", "ünï<cødé>\u202e", "::::"]


def _baseline(form: Any) -> dict[str, Any]:
    """A form's initial values as a browser would post them."""
    data: dict[str, Any] = {}
    for name, bound in form.fields.items():
        value = form[name].value()
        if bound.disabled:
            continue
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, (list, tuple)):
            data[name] = [str(v) for v in value]
        elif value is not None:
            data[name] = str(value)
    return data


@pytest.fixture
def world(admin_client):  # type: ignore[no-untyped-def]
    from manager.proxies.models import Application, Device, DnsRecord, Instance, Proxy

    inst = Instance.objects.create(name="acme", web="http://10.0.0.5:8080", sip_host="10.0.0.6")
    p = Proxy(name="edge", fqdn="edge.example.com")
    p.full_clean()
    p.save()
    app = Application.objects.create(proxy=p, name="api", port=9443, upstream="https://10.0.0.5:8443/api/")
    dev = Device.objects.create(instance=inst, mac="08C25A4F0321", label="desk")
    dns = DnsRecord(proxy=p, name="edge.dyn.example.com", zone="dyn.example.com", provider="cloudflare")
    dns.credentials = "a-cloudflare-token-of-some-length"
    dns.save()
    return {"proxy": p, "instance": inst, "application": app, "device": dev, "dns": dns}


def _forms(world: dict[str, Any]) -> list[tuple[str, Any]]:
    from django.contrib.auth import get_user_model

    from manager.proxies.forms import ApplicationForm, DeviceForm, InstanceForm, ProxyForm, UserForm
    from manager.proxies.forms_ops import BackupForm, DnsRecordForm
    from manager.proxies.models import Application, Device, Proxy
    from manager.proxies.views_ops import NewDnsRecordForm, StoredRestoreForm

    p, i, a, d, r = (world[k] for k in ("proxy", "instance", "application", "device", "dns"))
    user = get_user_model().objects.filter(username="hostile-user").first() or \
        get_user_model().objects.create_user("hostile-user", password="a-long-hostile-password")
    other = Proxy(name="other", fqdn="other.example.com", network_mode="manual", network_interface="eth7",
                  network_address="10.7.7.2/24", network_gateway="10.7.7.1", network_table=7)
    other.full_clean()
    other.save()
    return [
        ("/proxies/new/", ProxyForm(instance=Proxy())),
        (f"/proxies/{p.pk}/edit/", ProxyForm(instance=p)),
        ("/instances/new/", InstanceForm()),
        (f"/instances/{i.pk}/edit/", InstanceForm(instance=i)),
        (f"/proxies/{p.pk}/applications/new/", ApplicationForm(instance=Application(proxy=p),
                                                               initial={"name": "new", "port": 9444,
                                                                        "upstream": "https://b.local/v1/"})),
        (f"/proxies/{p.pk}/applications/{a.pk}/edit/", ApplicationForm(instance=a)),
        (f"/instances/{i.pk}/devices/", DeviceForm(instance=Device(instance=i), initial={"mac": "08C25A4F0399"})),
        (f"/instances/{i.pk}/devices/{d.pk}/edit/", DeviceForm(instance=d)),
        (f"/proxies/{p.pk}/dns/", DnsRecordForm(instance=r)),
        (f"/dns/{r.pk}/edit/", DnsRecordForm(instance=r)),
        ("/dns/new/", NewDnsRecordForm(initial={"proxy": other.pk, "name": "o.dyn.example.com",
                                                "zone": "dyn.example.com", "provider": "cloudflare",
                                                "credentials": "a-cloudflare-token-of-some-length"})),
        ("/users/new/", UserForm(initial={"username": "someone", "role": "viewer",
                                          "password": "a-long-new-password"})),
        (f"/users/{user.pk}/edit/", UserForm(instance=user)),
        (f"/proxies/{p.pk}/backups/", BackupForm(initial={"passphrase": "x" * 12, "passphrase2": "x" * 12})),
        (f"/proxies/{p.pk}/backups/0/restore/", StoredRestoreForm()),  # no such backup: 404, never 500
    ]


def test_every_form_with_every_hostile_value_in_every_field(admin_client, world) -> None:  # type: ignore[no-untyped-def]
    seen = 0
    for url, form in _forms(world):
        base = _baseline(form)
        for name in form.fields:
            for value in HOSTILE:
                r = admin_client.post(url, {**base, name: value})
                assert r.status_code in (200, 302, 404), (url, name, value, r.status_code)
                seen += 1
    assert seen > 300


def test_empty_posts_are_form_errors(admin_client, world) -> None:  # type: ignore[no-untyped-def]
    for url in ("/proxies/new/", "/instances/new/", f"/proxies/{world['proxy'].pk}/applications/new/",
                f"/instances/{world['instance'].pk}/devices/", "/dns/new/", "/users/new/"):
        r = admin_client.post(url, {})
        assert r.status_code == 200 and b"errorlist" in r.content, url
        assert b"Not saved" in r.content or b"not added" in r.content, url


def test_duplicate_mac_in_another_spelling_is_a_form_error(admin_client, world) -> None:  # type: ignore[no-untyped-def]
    from manager.proxies.models import Device

    inst = world["instance"]
    r = admin_client.post(f"/instances/{inst.pk}/devices/", {"mac": "08:c2:5a:4f:03:21", "label": "again"})
    assert r.status_code == 200
    page = html.unescape(r.content.decode())
    assert "Device with this Instance and MAC address already exists." in page
    assert Device.objects.filter(instance=inst).count() == 1
    other = Device.objects.create(instance=inst, mac="08C25A4F0322")
    r = admin_client.post(f"/instances/{inst.pk}/devices/{other.pk}/edit/", {"mac": "08-c2-5a-4f-03-21"})
    assert "already exists" in html.unescape(r.content.decode())


@pytest.mark.parametrize(("url", "data", "text"), [
    ("/instances/new/", {"name": "acme", "sip_transport": "udp", "sip_port": "5060", "web_prefix_mode": "rewrite"},
     "Instance with this Name already exists."),
    ("/proxies/new/", None, "Proxy with this Name already exists."),
    ("/users/new/", {"username": "dup", "role": "viewer", "password": "a-long-new-password"},
     "A user with that username already exists."),
])
def test_duplicates_are_form_errors(admin_client, world, url, data, text) -> None:  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    from manager.proxies.forms import ProxyForm

    get_user_model().objects.filter(username="dup").delete()
    get_user_model().objects.create_user("dup", password="a-long-dup-password")
    if data is None:
        data = {**_baseline(ProxyForm(instance=world["proxy"])), "network_mode": "manual", "network_interface": "eth9",
                "network_address": "10.9.9.2/24", "network_gateway": "10.9.9.1", "network_table": "9"}
    r = admin_client.post(url, data)
    assert r.status_code == 200 and text in html.unescape(r.content.decode())
