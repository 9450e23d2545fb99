"""DNS-01 end to end: proxyd's renewer asks the manager (agent API, agent key) to set the
`_acme-challenge` TXT record; the manager sets it through the proxy's DNS account, in a real BIND
(RFC 2136 + TSIG) or at Cloudflare; a real pebble, resolving through that BIND, validates it and
issues. The certificate key is made in proxyd; the DNS credentials never leave the manager.

Cloudflare itself cannot be reached from here: its API is the local stand-in of the dynamic-DNS
tests (tests/manager/dyndns/test_providers.py), which publishes the TXT records it is given into
the BIND, as Cloudflare's own nameservers would serve them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from manager.dyndns.providers import Rfc2136
from tests.manager.dyndns.test_providers import ZONE, Bind, CloudflareStandIn, cloudflare, run_bind  # noqa: F401
from tests.proxyd.pebble import PEBBLE, start_pebble

pytestmark = [pytest.mark.usefixtures("db"),
              pytest.mark.skipif(PEBBLE is None, reason="pebble is not installed (.ci/run installs it)")]

FQDN = f"edge.{ZONE}"


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Bind]:
    # the DNS account may write exactly the challenge label of the proxy's name, TXT only
    (tmp_path / "bind").mkdir()
    yield from run_bind(tmp_path / "bind", f"grant pforte-ddns name _acme-challenge.{FQDN}. TXT;")


def registered_proxy(directory: str, bind: Bind, account: dict[str, object] | None = None) -> tuple[object, str]:
    """The proxy in the manager (ACME, DNS-01) with its DNS account (default: RFC 2136 on the BIND),
    and its agent key."""
    from django.core.exceptions import ValidationError

    from manager.proxies.models import DnsRecord, Proxy

    proxy = Proxy(name="edge", fqdn=FQDN, tls_mode="acme", acme_directory=directory, acme_challenge="dns-01")
    with pytest.raises(ValidationError) as info:  # no DNS account yet: refused naming the field
        proxy.full_clean()
    assert "add the DNS record first" in info.value.message_dict["acme_challenge"][0]
    proxy.acme_challenge = "http-01"
    proxy.full_clean()
    proxy.save()
    fields = account or {"provider": "rfc2136", "server": "127.0.0.1", "port": bind.port,
                         "key_name": bind.key_name, "credentials": bind.secret}
    record = DnsRecord(proxy=proxy, name=FQDN, zone=ZONE, **{k: v for k, v in fields.items() if k != "credentials"})
    record.credentials = fields["credentials"]
    record.full_clean()
    record.save()
    proxy.acme_challenge = "dns-01"
    proxy.full_clean()
    proxy.save()
    return proxy, proxy.mint_api_key(source="127.0.0.1")


async def test_dns_01_through_the_manager_and_bind_issues(tmp_path: Path, bind: Bind, manager_url: str) -> None:
    from proxyd.acme_task import AcmeRenewer, AcmeSpec
    from proxyd.agent.acme_dns import blocking
    from proxyd.agent.client import ManagerClient
    from proxyd.agent.state import AgentState
    from proxyd.tls import CertStore

    pebble = start_pebble(tmp_path / "pebble", dns_server=f"127.0.0.1:{bind.port}")
    try:
        proxy, key = await asyncio.to_thread(registered_proxy, pebble.directory, bind)
        client = ManagerClient(AgentState(manager_url, proxy.pk, proxy.name, key))  # type: ignore[attr-defined]
        certs = CertStore(tmp_path / "certs")
        certs.use(None, None, FQDN, [])
        spec = AcmeSpec(pebble.directory, None, (FQDN,), "ecdsa-p256", "127.0.0.1", 0, pebble.tls_ca, "dns-01")
        renewer = AcmeRenewer(tmp_path / "acme", certs, spec, dns=blocking(client, asyncio.get_running_loop()))
        started = time.monotonic()
        await renewer.attempt()
        took = time.monotonic() - started
        st = renewer.status()
        assert st["last_error"] is None and "Pebble Intermediate" in st["issuer"], (
            st, (tmp_path / "pebble" / "pebble.log").read_text()[-2000:])
        assert not certs.current.self_signed and took < 30
        print(f"dns-01 through the manager and BIND: issued in {took:.1f} s")
        assert await asyncio.to_thread(bind.query, f"_acme-challenge.{FQDN}", "TXT") == []  # removed after
        # the manager writes nothing but the challenge label of the proxy's own names
        status, detail = await client.post_json("/api/v1/proxy/acme-dns", {
            "name": f"other.{ZONE}", "value": "A" * 43, "present": True})
        assert (status, "not a name of this proxy's certificate" in detail) == (403, True)
        status, _ = await client.post_json("/api/v1/proxy/acme-dns", {"name": FQDN, "value": "x;rm", "present": True})
        assert status == 400
        proxy.acme_challenge = "http-01"  # type: ignore[attr-defined]
        await asyncio.to_thread(proxy.save)  # type: ignore[attr-defined]
        status, _ = await client.post_json("/api/v1/proxy/acme-dns", {"name": FQDN, "value": "A" * 43, "present": True})
        assert status == 409
        await client.close()
        # an unmanaged proxyd: DNS-01 fails with the reason, nothing is asked
        alone = AcmeRenewer(tmp_path / "acme2", CertStore(tmp_path / "certs2"), spec)
        alone.certs.use(None, None, FQDN, [])
        await alone.attempt()
        assert "DNS-01 needs the manager" in alone.status()["last_error"]
    finally:
        pebble.stop()


async def test_dns_01_through_the_manager_and_cloudflare_issues(tmp_path: Path, bind: Bind, cloudflare: str,  # noqa: F811
                                                                manager_url: str) -> None:
    from proxyd.acme_task import AcmeRenewer, AcmeSpec
    from proxyd.agent.acme_dns import blocking
    from proxyd.agent.client import ManagerClient
    from proxyd.agent.state import AgentState
    from proxyd.tls import CertStore

    zone = Rfc2136("127.0.0.1", ZONE, bind.key_name, bind.secret, port=bind.port)
    published: list[tuple[str, bool]] = []

    def publish(record: dict[str, object], present: bool) -> None:
        zone.txt(str(record["name"]), str(record["content"]), present)
        published.append((str(record["name"]), present))

    CloudflareStandIn.publish = publish
    pebble = start_pebble(tmp_path / "pebble", dns_server=f"127.0.0.1:{bind.port}")
    try:
        proxy, key = await asyncio.to_thread(registered_proxy, pebble.directory, bind, {
            "provider": "cloudflare", "api_url": cloudflare, "credentials": CloudflareStandIn.token})
        client = ManagerClient(AgentState(manager_url, proxy.pk, proxy.name, key))  # type: ignore[attr-defined]
        certs = CertStore(tmp_path / "certs")
        certs.use(None, None, FQDN, [])
        spec = AcmeSpec(pebble.directory, None, (FQDN,), "rsa-2048", "127.0.0.1", 0, pebble.tls_ca, "dns-01")
        renewer = AcmeRenewer(tmp_path / "acme", certs, spec, dns=blocking(client, asyncio.get_running_loop()))
        started = time.monotonic()
        await renewer.attempt()
        took = time.monotonic() - started
        st = renewer.status()
        assert st["last_error"] is None and "Pebble Intermediate" in st["issuer"], (
            st, (tmp_path / "pebble" / "pebble.log").read_text()[-2000:])
        assert not certs.current.self_signed and took < 30
        print(f"dns-01 through the manager and Cloudflare (stand-in): issued in {took:.1f} s")
        # set through the Cloudflare API (with the zone token only the manager holds), then removed
        assert published == [(f"_acme-challenge.{FQDN}", True), (f"_acme-challenge.{FQDN}", False)]
        assert not [r for r in CloudflareStandIn.records.values() if r["type"] == "TXT"]
        assert await asyncio.to_thread(bind.query, f"_acme-challenge.{FQDN}", "TXT") == []

        # the Cloudflare token is refused: the order fails with the API's reason, the certificate stays
        CloudflareStandIn.token = "rotated-elsewhere"
        good = certs.current
        renewer.state = type(renewer.state)()  # due again now
        await renewer.attempt()
        st = renewer.status()
        assert certs.current is good and st["failures"] == 1, st
        assert "Cloudflare API refused: Invalid access token" in st["last_error"], st
        await client.close()
    finally:
        pebble.stop()
