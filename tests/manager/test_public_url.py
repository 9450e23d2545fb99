"""The URL the manager gives agents comes from configuration (PFORTE_PUBLIC_URL), never from the
request's Host header; other Host names are refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.usefixtures("db")


def proxy_and_token():  # type: ignore[no-untyped-def]
    from manager.proxies.models import Proxy, Registration

    p = Proxy(name="pub", fqdn="pub.example.com")
    p.full_clean()
    p.save()
    return p, Registration.create_for(p)[1]


def test_register_answers_the_configured_manager_url_whatever_the_host_header() -> None:
    from django.conf import settings
    from django.test import Client

    _, token = proxy_and_token()
    r = Client(HTTP_HOST="localhost:9999").post("/api/v1/register/", {"token": token}, content_type="application/json")
    assert r.status_code == 201 and r.json()["manager_url"] == settings.PUBLIC_URL == "http://127.0.0.1:8000"


def test_the_registration_url_on_the_page_uses_the_public_url(admin_client) -> None:  # type: ignore[no-untyped-def]
    p, _ = proxy_and_token()
    admin_client.post(f"/proxies/{p.pk}/registrations/", HTTP_HOST="localhost:9999")
    page = admin_client.get(f"/proxies/{p.pk}/").content.decode()
    assert "http://127.0.0.1:8000/api/v1/register/#" in page and "localhost:9999" not in page


def test_a_foreign_host_header_is_refused() -> None:
    from django.test import Client

    _, token = proxy_and_token()
    r = Client(HTTP_HOST="manager.attacker.example").post("/api/v1/register/", {"token": token},
                                                          content_type="application/json")
    assert r.status_code == 400


def test_allowed_hosts_and_csrf_origins_follow_the_public_url(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = ("from django.conf import settings as s; import django; django.setup(); "
            "print(s.ALLOWED_HOSTS, s.CSRF_TRUSTED_ORIGINS, s.PUBLIC_URL)")
    env = {"PFORTE_MANAGER_DATA": str(tmp_path), "DJANGO_SETTINGS_MODULE": "manager.settings",
           "PFORTE_PUBLIC_URL": "https://manager.example.com/", "PFORTE_ALLOWED_HOSTS": "mgr.lan"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == ("['127.0.0.1', 'localhost', '[::1]', 'manager.example.com', 'mgr.lan'] "
                           "['https://manager.example.com'] https://manager.example.com")
    bad = subprocess.run([sys.executable, "-c", code], env={**env, "PFORTE_PUBLIC_URL": "manager.example.com"},
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "expected http(s)://HOST[:PORT]" in bad.stderr
