"""The certificate mode per proxy: fields checked naming the field, compiled into ProxyConfig,
and what proxyd reports about its certificate (heartbeat) shown per name, Degraded included."""

from __future__ import annotations

import time

import pytest
from django.core.exceptions import ValidationError
from django.test import Client

from tests.manager.test_rules_and_compiler import make_proxy

pytestmark = pytest.mark.usefixtures("db")

ACME = {"tls_mode": "acme", "acme_directory": "https://acme.example.net/dir", "acme_email": "ops@example.net"}


def test_acme_fields_compile_into_the_proxy_config() -> None:
    from manager.proxies.compiler import compile_config

    p = make_proxy(**ACME, acme_names="prov.example.net\nxmpp.example.net", tls_key_type="rsa-2048",
                   acme_challenge="tls-alpn-01")
    tls = compile_config(p).tls
    assert (tls.mode, tls.acme_directory, tls.acme_email, tls.key_type, tls.acme_challenge) == (
        "acme", "https://acme.example.net/dir", "ops@example.net", "rsa-2048", "tls-alpn-01")
    assert tls.acme_names == ("prov.example.net", "xmpp.example.net") and tls.certificate_pem is None
    p.tls_mode = "self-signed"
    assert compile_config(p).tls.mode == "self-signed"


def test_a_pair_kept_from_mode_uploaded_is_not_sent_in_mode_acme() -> None:
    from manager.proxies.compiler import compile_config
    from manager.proxies.models import Proxy
    from proxyd.tls import make_self_signed

    cert, key = make_self_signed("mobydick.example.com", [])
    p = Proxy(name="dmz", fqdn="mobydick.example.com", tls_mode="uploaded", certificate_pem=cert)
    p.key_pem = key
    p.full_clean()
    p.save()
    assert compile_config(p).tls.certificate_pem == cert
    p.tls_mode, p.acme_directory = "acme", "https://acme.example.net/dir"
    p.full_clean()
    assert (compile_config(p).tls.certificate_pem, compile_config(p).tls.key_pem) == (None, None)


@pytest.mark.parametrize(("fields", "where", "says"), [
    ({"tls_mode": "acme"}, "acme_directory", "needs the CA's directory URL"),
    ({**ACME, "acme_directory": "http://acme.example.net/dir"}, "acme_directory", "https"),
    ({**ACME, "acme_names": "10.0.0.1"}, "acme_names", "not IP addresses"),
    ({**ACME, "acme_http_port": 443}, "acme_http_port", "collides with services.web.port"),
    ({**ACME, "acme_challenge": "tls-alpn-01", "web_mode": "off"}, "acme_challenge", "HTTPS listener"),
    ({"tls_mode": "uploaded"}, "certificate_pem", "needs certificate_pem"),
    ({**ACME, "acme_email": "nobody"}, "acme_email", "e-mail"),
])
def test_bad_certificate_settings_are_refused_naming_the_field(fields, where, says) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as info:
        make_proxy(**fields)
    errors = info.value.message_dict
    assert where in errors and says in " ".join(errors[where]), errors


def test_the_proxy_page_shows_each_name_and_degraded_from_the_heartbeat(admin_client) -> None:  # type: ignore[no-untyped-def]
    p = make_proxy(**ACME, acme_names="prov.example.net")
    key = p.mint_api_key(source="127.0.0.1")
    now = time.time()
    # the shape proxyd's status has (Supervisor.status: certificates, acme, degraded), as the agent sends it
    reason = "certificate: ACME renewal keeps failing and the certificate expires within 14 days"
    certificate = {"certificates": [{"name": "server", "issuer": "CN=Pebble Intermediate CA 1a2b",
                                     "not_after": now + 5 * 86400, "self_signed": False}],
                   "acme": {"names": ["mobydick.example.com", "prov.example.net"],
                            "issuer": "CN=Pebble Intermediate CA 1a2b", "not_after": now + 5 * 86400,
                            "last_attempt": now - 60, "last_error": "CA unreachable: ConnectionError: refused",
                            "failures": 3, "retry_at": now + 240, "degraded": True},
                   "degraded": [reason]}
    r = Client().post("/api/v1/proxy/heartbeat", {"version": "t", "uptime": 1, "services": {},
                                                  "certificate": certificate},
                      content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert r.status_code == 200, r.content
    p.refresh_from_db()
    assert p.status() == ("Degraded", reason)
    page = admin_client.get(f"/proxies/{p.pk}/").content.decode()
    section = page.split('id="certificate"')[1].split("</fieldset>")[0]
    expires = time.strftime("%Y-%m-%d", time.gmtime(now + 5 * 86400))
    for text in ("ACME", "mobydick.example.com", "prov.example.net", "Pebble Intermediate CA 1a2b",
                 "CA unreachable: ConnectionError: refused", "Degraded:", expires):
        assert text in section, (text, section)
    # a hostile agent's odd values never break the page
    certificate["acme"].update(not_after="soon", last_attempt=1e300, names="x")
    r = Client().post("/api/v1/proxy/heartbeat", {"version": "t", "uptime": 1, "certificate": certificate},
                      content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert r.status_code == 200 and admin_client.get(f"/proxies/{p.pk}/").status_code == 200
