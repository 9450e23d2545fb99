"""The certificate mode in a real browser (Debian chromium driven by Playwright): an admin sets a
proxy to ACME on the proxy form (a refused field shown as a form error next to it), and the proxy
page shows per name what proxyd reported: issuer, expiry, last renewal attempt and its error, and
Degraded in the live status without a reload.

What proxyd reports is real: an AcmeRenewer issues against a real pebble (HTTP-01 validated), then
fails against the stopped CA; its status goes to the manager in a heartbeat over HTTP, with the
agent key, in the shape the agent sends it (proxyd/agent/runner.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.manager.browser import chromium, log_in
from tests.proxyd.pebble import PEBBLE, start_pebble

pytestmark = [pytest.mark.peer, pytest.mark.usefixtures("db"),
              pytest.mark.skipif(PEBBLE is None, reason="pebble is not installed (.ci/run installs it)")]

DEGRADED = "certificate: ACME renewal keeps failing and the certificate expires within 14 days"


def off_loop(fn: Callable[..., object], *args: object) -> object:
    """fn in a thread of its own: Playwright's sync API runs an event loop in this one, where Django
    refuses the ORM and asyncio.run cannot start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def stored(name: str) -> tuple[tuple[str, str, str], str]:
    """The proxy's certificate fields as saved, and an agent key for it."""
    from manager.proxies.models import Proxy

    proxy = Proxy.objects.get(name=name)
    return (proxy.tls_mode, proxy.acme_names, proxy.tls_key_type), proxy.mint_api_key(source="127.0.0.1")


def renewer_status(tmp_path: Path, names: tuple[str, ...]) -> dict[str, object]:
    """Issue against pebble (an hour-long certificate), then try again with pebble stopped. Names
    must resolve to loopback for pebble's HTTP-01 check: without a DNS server of the test's own that
    is `localhost` only (test_acme_dns01 covers several names through BIND)."""
    from proxyd.acme_task import AcmeRenewer, AcmeSpec
    from proxyd.tls import CertStore

    pebble = start_pebble(tmp_path / "pebble", validity=3600)
    certs = CertStore(tmp_path / "certs")
    certs.use(None, None, names[0], [])
    renewer = AcmeRenewer(tmp_path / "acme", certs, AcmeSpec(
        pebble.directory, "ops@example.net", names, "ecdsa-p256", "127.0.0.1", pebble.http_port, pebble.tls_ca))
    try:
        asyncio.run(renewer.attempt())
        assert renewer.status()["last_error"] is None, renewer.status()
    finally:
        pebble.stop()
    asyncio.run(renewer.attempt())
    status = renewer.status()
    assert status["issuer"] and "CA unreachable" in str(status["last_error"]) and status["degraded"], status
    return status


def test_acme_fields_on_the_form_and_per_name_status_on_the_proxy_page(manager_url: str, tmp_path: Path) -> None:
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username="cert-admin").delete()
    get_user_model().objects.create_superuser("cert-admin", "a@example.invalid", "a-long-ui-password")
    with chromium(tmp_path) as browser:
        page = log_in(browser, manager_url, "cert-admin", "a-long-ui-password")
        page.goto(f"{manager_url}/proxies/new/")
        page.fill("#id_name", "edge")
        page.fill("#id_fqdn", "localhost")
        page.select_option("#id_tls_mode", "acme")
        page.fill("#id_acme_directory", "http://acme.example.net/dir")  # plain http: refused
        page.fill("#id_acme_email", "ops@example.net")
        page.fill("#id_acme_names", "localhost")
        page.select_option("#id_tls_key_type", "ecdsa-p256")
        page.select_option("#id_acme_challenge", "http-01")
        page.click("button[type=submit]")
        page.wait_for_selector("#messages >> text=Not saved")
        error = page.locator("#id_acme_directory_error").inner_text(timeout=5000)  # the field's own error list
        assert "expected an absolute https URL" in error, error
        assert page.locator("#id_acme_email").input_value() == "ops@example.net"  # nothing typed is lost
        page.fill("#id_acme_directory", "https://acme.example.net/dir")
        page.click("button[type=submit]")
        page.wait_for_selector("text=Create Registration")
        cert = page.locator("#certificate").inner_text()
        assert "ACME" in cert and "https://acme.example.net/dir" in cert and "HTTP-01" in cert, cert

        fields, key = off_loop(stored, "edge")  # type: ignore[misc]
        assert fields == ("acme", "localhost", "ecdsa-p256")
        acme: dict = off_loop(renewer_status, tmp_path, ("localhost",))  # type: ignore[assignment]
        r = httpx.post(f"{manager_url}/api/v1/proxy/heartbeat", headers={"Authorization": f"Bearer {key}"},
                       timeout=30, json={"version": "t", "uptime": 1, "services": {}, "certificate": {
                           "certificates": [], "acme": acme, "degraded": [DEGRADED]}})
        assert r.status_code == 200, r.text
        # the live status turns Degraded, with the reason, without a reload
        page.wait_for_selector(f"#status[data-status=Degraded] >> text={DEGRADED}", timeout=10_000)
        page.reload()
        rows = page.locator("#certificate tr")
        assert rows.count() == 2  # a header and one row per name
        expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(acme["not_after"]))  # type: ignore[arg-type]
        attempted = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(acme["last_attempt"]))  # type: ignore[arg-type]
        for i, name in enumerate(("localhost",), start=1):
            cells = rows.nth(i).locator("td").all_inner_texts()
            assert cells[0] == name and "Pebble Intermediate" in cells[1], cells
            assert (cells[2], cells[3]) == (expires, attempted), cells
            assert "CA unreachable" in cells[4], cells
        assert f"Degraded: {DEGRADED}" in page.locator("#certificate").inner_text()
        page.screenshot(path=str(tmp_path / "certificate.png"), full_page=True)
