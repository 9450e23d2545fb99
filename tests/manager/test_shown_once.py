"""Shown once, then masked: every key the manager makes or is given (provisioning key, certificate
key, registration URL, agent key, API tokens, DNS credentials) is in full at most in the answer that
made it, and never again: not on any page, form, list or API answer of the project, walked over
every URL pattern as an admin (who sees the most), nor echoed by a form that refused its input."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.manager.test_permissions import Seed, all_patterns, body, required, url_of

pytestmark = pytest.mark.usefixtures("db")
DNS_SECRET = "c2hvd24tb25jZS10c2lnLXNlY3JldA=="  # base64, as a TSIG secret is
AGENT_KEY = "agent key"


def _key_body(pem: str) -> str:
    """A line of the private key's base64 (the PEM markers are in help texts too)."""
    return max(pem.splitlines(), key=len)


def test_every_secret_is_shown_once_then_never(admin_client: Client) -> None:
    from manager.proxies.models import (
        ApiToken,
        Backup,
        Device,
        DnsRecord,
        Heartbeat,
        Instance,
        ObjectChange,
        Proxy,
        ProxyAction,
        Registration,
    )
    from proxyd.tls import make_self_signed

    c = admin_client
    inst = Instance.objects.create(name="once", web="http://10.0.0.5:8080")
    device = Device.objects.create(instance=inst, mac="08C25A4F0399")
    cert, key = make_self_signed("once.example.com", [])
    p = Proxy(name="once", fqdn="once.example.com")
    p.full_clean()
    p.save()
    shown: dict[str, str] = {"provisioning key": p.provisioning_key, "private key": _key_body(key)}

    # the certificate key goes in through the edit form; a refused form does not echo it back
    from manager.proxies.forms import ProxyForm

    fields = {k: v for k, v in ProxyForm(instance=p).initial.items() if v is not None and k != "network_mode"}
    r = c.post(f"/proxies/{p.pk}/edit/", {**fields, "certificate_pem": cert, "key_pem": key, "web_port": "0"})
    assert r.status_code == 200 and shown["private key"] not in r.content.decode()
    r = c.post(f"/proxies/{p.pk}/edit/", {**fields, "certificate_pem": cert, "key_pem": key}, follow=True)
    assert r.status_code == 200 and "saved" in r.content.decode()
    p.refresh_from_db()
    assert p.key_pem.strip() == key.strip() and shown["private key"] not in r.content.decode()

    # a registration URL: on the page that follows its creation, once
    r = c.post(f"/proxies/{p.pk}/registrations/", follow=True)
    (reg_token,) = re.findall(r"/api/v1/register/#([A-Za-z0-9_-]{43})", r.content.decode())
    shown["registration token"] = reg_token
    # the agent key: in the registration answer to the agent, once
    r = Client().post("/api/v1/register/", {"token": reg_token, "hostname": "once-host"},
                      content_type="application/json")
    assert r.status_code in (200, 201), r.content
    shown["agent key"] = r.json()["api_key"].partition(".")[2]
    # API tokens: in the answer that made them
    r = c.post("/tokens/new/", {"name": "ui", "role": "viewer"})
    (ui_token,) = re.findall(r"pft_[A-Za-z0-9_-]{43}", r.content.decode())
    r = c.post("/api/v1/objects/tokens/", {"name": "api", "role": "admin"}, content_type="application/json")
    assert r.status_code == 201
    shown["UI token"], shown["API token"] = ui_token[4:], r.json()["key"][4:]
    # DNS credentials: typed by the admin, never shown, not even by a form that refused them
    new = {"proxy": p.pk, "name": "once.dyn.example.com", "zone": "dyn.example.com", "provider": "rfc2136",
           "server": "192.0.2.53", "port": "53", "key_name": "once", "algorithm": "hmac-sha256",
           "api_url": "https://api.cloudflare.com/client/v4", "credentials": DNS_SECRET}
    r = c.post("/dns/new/", {**new, "name": "outside.example.org"})
    assert r.status_code == 200 and "is not inside zone" in r.content.decode()
    assert DNS_SECRET not in r.content.decode()
    r = c.post("/dns/new/", new, follow=True)
    assert DnsRecord.objects.get(proxy=p).credentials == DNS_SECRET and DNS_SECRET not in r.content.decode()
    shown["DNS credentials"] = DNS_SECRET

    # every object a pattern can name exists, then every GET of the project is searched
    Heartbeat.objects.create(proxy=p, source="127.0.0.1", applied_revision=p.active_revision.number)
    backup = Backup.objects.create(proxy=p, size=4, data=b"once")
    action = ProxyAction.objects.create(proxy=p, kind=ProxyAction.BACKUP)
    from manager.proxies.models import Application

    app = Application.objects.create(proxy=p, name="app", port=8443, upstream="https://10.0.0.5:8443/api/")
    from django.contrib.auth import get_user_model

    ids = {"proxy": p.pk, "instance": inst.pk, "application": app.pk, "device": device.pk,
           "registration": Registration.objects.filter(proxy=p).first().pk, "backup": backup.pk,
           "action": action.pk, "dnsrecord": DnsRecord.objects.get(proxy=p).pk,
           "configrevision": p.active_revision.pk, "heartbeat": p.last_heartbeat.pk,
           "user": get_user_model().objects.get(username="dev-admin").pk,
           "change": ObjectChange.objects.filter(object_type="proxies.proxy", object_id=p.pk).first().pk,
           "apitoken": ApiToken.objects.filter(name="ui").first().pk}
    seed = Seed(ids, {}, "")
    found, walked = [], 0
    for pattern in all_patterns():
        if required(pattern) == AGENT_KEY:
            continue  # the agents' API answers only an agent key: no session reaches it
        url = url_of(pattern, seed)
        resp = c.get(url)
        text = body(resp)
        walked += 1
        found += [f"GET {url}: the {what}" for what, secret in shown.items() if secret in text]
    assert walked > 100 and not found, "\n".join(found)
