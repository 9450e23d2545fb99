"""DDNS driven by heartbeats against the served manager: a heartbeat from a new source address
(sent from 127.0.0.2) updates a real BIND 9 zone (checked with a DNS query) and the Cloudflare
stand-in; an unchanged address updates nothing; a failing provider is retried and the result
shown on the proxy page; credentials are never shown back nor logged."""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import pytest

from manager.proxies.feed import SQLITE_RECHECK
from tests.manager.dyndns.test_providers import NAME, ZONE, Bind, CloudflareStandIn, bind, cloudflare  # noqa: F401

pytestmark = pytest.mark.usefixtures("db")


@pytest.fixture
def admin():  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model
    from django.test import Client

    User = get_user_model()  # noqa: N806
    User.objects.filter(username="dns-admin").delete()
    c = Client()
    c.force_login(User.objects.create_superuser("dns-admin", "d@example.invalid", "a-long-dns-password"))
    return c


def proxy_with_key():  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy

    p = Proxy(name="dyn", fqdn="dyn.example.com")
    p.full_clean()
    p.save()
    return p, p.mint_api_key()


def heartbeat(url: str, key: str, source: str) -> dict[str, Any]:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as c:
        r = c.post(f"{url}/api/v1/proxy/heartbeat", json={"version": "t"}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    return dict(r.json())


def record(p):  # type: ignore[no-untyped-def]
    from manager.proxies.models import DnsRecord

    return DnsRecord.objects.get(proxy=p)


def settled(p, timeout: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = record(p)
        if rec.state in ("ok", "failed"):
            return rec
        time.sleep(0.05)
    raise AssertionError(f"DNS update did not finish: {record(p).state}")


def add_record(admin, p, **fields: Any) -> None:  # type: ignore[no-untyped-def]
    """Through the proxy page's form, as an admin would."""
    r = admin.post(f"/proxies/{p.pk}/dns/", {"name": NAME, "zone": ZONE, "port": 53, "algorithm": "hmac-sha256",
                                             "api_url": "https://api.cloudflare.com/client/v4", **fields})
    assert r.status_code == 302
    assert "DNS record saved" in admin.get(f"/proxies/{p.pk}/").content.decode()
    # saved in this process: the served manager (another process on the same SQLite file) learns
    # that the proxy has a record at its next look at the database, once a second
    time.sleep(SQLITE_RECHECK + 0.5)


def test_rfc2136_follows_the_heartbeat_source(manager_url: str, bind: Bind, admin) -> None:  # noqa: F811
    p, key = proxy_with_key()
    add_record(admin, p, provider="rfc2136", server="127.0.0.1", port=bind.port, key_name=bind.key_name,
               credentials=bind.secret)
    assert record(p).state == "" and bind.query(NAME, "A") == []  # no heartbeat yet: nothing to do

    heartbeat(manager_url, key, "127.0.0.2")  # first contact
    rec = settled(p)
    assert rec.state == "ok" and rec.synced_address == "127.0.0.2" and rec.attempts == 1
    assert bind.query(NAME, "A") == ["127.0.0.2"]
    html = admin.get(f"/proxies/{p.pk}/").content.decode()
    assert f"{NAME} A 127.0.0.2 (RFC 2136 at 127.0.0.1)" in html and "127.0.0.2" in html
    assert bind.secret not in html and bind.secret not in rec.credentials_enc

    heartbeat(manager_url, key, "127.0.0.2")  # unchanged: decided inside the request, nothing started
    again = record(p)
    assert (again.state, again.last_update, again.attempts) == ("ok", rec.last_update, 1)

    heartbeat(manager_url, key, "127.0.0.1")  # moved
    rec = settled(p)
    assert rec.synced_address == "127.0.0.1" and bind.query(NAME, "A") == ["127.0.0.1"]
    assert bind.query(f"other.{ZONE}", "A") == ["127.0.0.9"]  # nothing else in the zone touched


def test_cloudflare_retries_failures_and_shows_them(manager_url: str, cloudflare: str, admin) -> None:  # noqa: F811
    p, key = proxy_with_key()
    token = CloudflareStandIn.token
    add_record(admin, p, provider="cloudflare", api_url=cloudflare, credentials=token)

    CloudflareStandIn.fail_next = 2  # two 500s, then success
    t0 = time.monotonic()
    heartbeat(manager_url, key, "127.0.0.2")
    answered = time.monotonic() - t0
    assert record(p).state == "updating"  # the heartbeat did not wait for the retries
    rec = settled(p)
    print(f"\nheartbeat answered in {answered * 1000:.0f} ms while the update retried in the background")
    assert rec.state == "ok" and rec.attempts == 3 and rec.last_result.endswith("(after 3 attempts)")
    mine = [(r["type"], r["content"]) for r in CloudflareStandIn.records.values() if r["name"] == NAME]
    assert mine == [("A", "127.0.0.2")]

    CloudflareStandIn.fail_next = 100  # down for good
    heartbeat(manager_url, key, "127.0.0.1")
    rec = settled(p)
    assert rec.state == "failed" and rec.attempts == 3 and "internal error" in rec.last_result
    assert rec.synced_address == "127.0.0.2"
    html = admin.get(f"/proxies/{p.pk}/").content.decode()
    assert "failed" in html and "Cloudflare API refused: internal error (after 3 attempts)" in html
    assert token not in html and "stored, ends in" in html

    heartbeat(manager_url, key, "127.0.0.1")  # same failing address: not hammered at every heartbeat
    assert (record(p).state, record(p).last_update) == ("failed", rec.last_update)
    CloudflareStandIn.fail_next = 0
    heartbeat(manager_url, key, "127.0.0.2")  # back where the record points: nothing to do
    assert record(p).last_update == rec.last_update

    from django.conf import settings

    with open(os.path.join(settings.DATA_DIR, "serve.log")) as f:
        assert token not in f.read()  # never logged


def test_editing_the_record_keeps_the_secret_unless_a_new_one_is_typed(admin) -> None:  # type: ignore[no-untyped-def]
    p, _ = proxy_with_key()
    r = admin.post(f"/proxies/{p.pk}/dns/", {"name": NAME, "zone": ZONE, "provider": "rfc2136", "port": 53,
                                             "algorithm": "hmac-sha256", "api_url": "https://x.invalid/"})
    assert r.status_code == 302
    html = admin.get(f"/proxies/{p.pk}/").content.decode()
    assert "Not saved" in html and "Required for RFC 2136" in html
    admin.post(f"/proxies/{p.pk}/dns/", {"name": NAME, "zone": ZONE, "provider": "rfc2136", "port": 53,
                                         "server": "ns.example.test", "key_name": "k", "algorithm": "hmac-sha256",
                                         "api_url": "https://x.invalid/", "credentials": "not base64!"})
    assert "A TSIG secret is base64" in admin.get(f"/proxies/{p.pk}/").content.decode()
    secret = "c2VjcmV0LXRzaWctdmFsdWU="
    add_record(admin, p, provider="rfc2136", server="ns.example.test", key_name="k", credentials=secret)
    add_record(admin, p, provider="rfc2136", server="ns2.example.test", key_name="k")  # blank: keep
    rec = record(p)
    assert rec.server == "ns2.example.test" and rec.credentials == secret
    html = admin.get(f"/proxies/{p.pk}/").content.decode()
    assert secret not in html and "ends in …WU=" in html
    admin.post(f"/proxies/{p.pk}/dns/", {"name": "x.elsewhere.test", "zone": ZONE, "provider": "cloudflare",
                                             "port": 53, "algorithm": "hmac-sha256", "api_url": "https://x.invalid/"})
    assert "is not inside zone" in admin.get(f"/proxies/{p.pk}/").content.decode()
    from manager.proxies.models import DnsRecord

    confirm = admin.get(f"/dns/{rec.pk}/delete/").content.decode()
    assert "The record in DNS itself is left as it is." in confirm and DnsRecord.objects.filter(proxy=p).exists()
    admin.post(f"/dns/{rec.pk}/delete/", {"confirm": "1"})

    assert not DnsRecord.objects.filter(proxy=p).exists()
