"""The HTTP row of the interop matrix (issue #19): a real Chromium, driven by Playwright, against a
real proxyd in front of tests/e2e/apps/prefix_app.py, over the proxy's own TLS listener.

What a browser does and an HTTP library does not: it keeps cookies by their Path, resolves relative
links and form actions against the page URL, follows `Refresh`, opens WebSockets from page
JavaScript with an Origin header. Two instances: `beta` is a prefix-unaware app (web_prefix_mode
`rewrite`: the proxy rewrites Set-Cookie Path, Location, Refresh), `alpha` a prefix-aware one
(`forward_prefix`: it is told X-Forwarded-Prefix and nothing is rewritten). A third proxyd in
`rest_only` mode serves only `/<instance>/services/...`.

The proxy's certificate is its self-signed one (fqdn `localhost`); the browser trusts exactly that
key (Chromium's SPKI pin list), not "any certificate": a proxy presenting another key fails the
page load (see the last test).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.e2e.apps.prefix_app import PrefixApp
from tests.support import ProxydProcess, base_config, free_port, require_peer

pytestmark = [pytest.mark.e2e, pytest.mark.peer]
Proxyd = Callable[..., ProxydProcess]
TIMEOUT_MS = 15_000


def spki_pin(proxy: ProxydProcess) -> str:
    """The base64 SHA-256 of the proxy's current certificate's public key, as Chromium's
    --ignore-certificate-errors-spki-list wants it: that one key is trusted, nothing else."""
    cert = x509.load_pem_x509_certificate((proxy.state_dir / "certs" / "current.pem").read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Callable[[ProxydProcess], Any]]:
    """`browser(proxy)`: a Chromium that trusts that proxy's self-signed certificate (its key pinned)
    and one context (its own cookie jar); every browser is closed at teardown."""
    chromium = require_peer("chromium")
    from playwright.sync_api import sync_playwright

    os.environ.setdefault("PLAYWRIGHT_BROWSERS_PATH", str(tmp_path))  # never download a browser
    with sync_playwright() as pw:
        launched: list[Any] = []

        def open_for(proxy: ProxydProcess) -> Any:
            b = pw.chromium.launch(executable_path=chromium, headless=True, timeout=TIMEOUT_MS, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--ignore-certificate-errors-spki-list={spki_pin(proxy)}"])
            launched.append(b)
            ctx = b.new_context()
            ctx.set_default_timeout(TIMEOUT_MS)
            ctx.set_default_navigation_timeout(TIMEOUT_MS)
            return ctx

        try:
            yield open_for
        finally:
            for b in launched:
                b.close()


@pytest.fixture
def site(proxyd: Proxyd, browser: Callable[[ProxydProcess], Any]) -> Iterator[tuple[str, Any]]:
    """The two instances behind one proxyd; its origin, and a browser context that trusts it."""
    with PrefixApp(aware=False) as unaware, PrefixApp(aware=True) as aware:
        web = free_port()
        proxy = proxyd(base_config(
            proxy={"name": "test", "fqdn": "localhost", "enabled": True},
            instances=[{"name": "beta", "web": unaware.url},  # web_prefix_mode "rewrite", the default
                       {"name": "alpha", "web": aware.url, "web_prefix_mode": "forward_prefix"}],
            services={"web": {"mode": "web_and_rest", "port": web}}))
        yield f"https://localhost:{web}", browser(proxy)


def cookies(ctx: Any) -> dict[str, str]:
    return {c["name"]: c["path"] for c in ctx.cookies()}


@pytest.mark.parametrize("instance", ["beta", "alpha"])
def test_login_cookie_is_kept_under_the_instance_and_sent_on_the_next_page(
        site: tuple[str, Any], instance: str) -> None:
    origin, browser = site
    page = browser.new_page()
    r = page.goto(f"{origin}/{instance}/")
    assert r is not None and r.status == 200 and page.title() == "prefix app"
    page.fill("input[name=user]", "erin")
    page.click("button")  # the form's relative action resolves to /<instance>/login
    page.wait_for_url(f"{origin}/{instance}/home")  # the 303 stayed inside the instance
    assert page.inner_text("body").strip() == "hello erin"
    assert cookies(browser) == {"sid": f"/{instance}/"}  # not /, not /alpha/alpha/
    r = page.goto(f"{origin}/{instance}/")
    page.click("#home")  # a new page: the browser sends the cookie it kept
    page.wait_for_url(f"{origin}/{instance}/home")
    assert page.inner_text("body").strip() == "hello erin"
    other = "alpha" if instance == "beta" else "beta"
    r = page.goto(f"{origin}/{other}/home")
    assert r is not None and r.status == 401  # the cookie's Path keeps it with its instance
    page.goto(f"{origin}/{instance}/")
    page.click("#logout")  # an absolute redirect to the app's own idea of its origin
    page.wait_for_url(f"{origin}/{instance}/")
    assert "sid" not in cookies(browser)


def test_redirects_and_refresh_stay_inside_the_instance(site: tuple[str, Any]) -> None:
    origin, browser = site
    page = browser.new_page()
    page.goto(f"{origin}/beta/login?user=frank")
    assert page.url == f"{origin}/beta/home"
    page.goto(f"{origin}/beta/self")  # the app redirects to its own upstream address
    assert page.url == f"{origin}/beta/home" and page.inner_text("body").strip() == "hello frank"
    page.goto(f"{origin}/beta/refresh")  # `Refresh: 0; url=/home`, followed by the browser
    page.wait_for_url(f"{origin}/beta/home")


@pytest.mark.parametrize("instance", ["beta", "alpha"])
def test_a_websocket_from_the_pages_javascript_echoes_through_the_proxy(
        site: tuple[str, Any], instance: str) -> None:
    origin, browser = site
    page = browser.new_page()
    page.goto(f"{origin}/{instance}/")
    got = page.evaluate("""() => new Promise((resolve, reject) => {
        const ws = new WebSocket(new URL("ws", location.href).href.replace(/^http/, "ws"));
        ws.onopen = () => ws.send("from-the-page");
        ws.onmessage = (e) => { resolve(e.data); ws.close(); };
        ws.onerror = () => reject(new Error("websocket error"));
        setTimeout(() => reject(new Error("no echo in 10 s")), 10000);
    })""")
    assert got == "echo:from-the-page"


def test_rest_only_mode_hides_the_ui_and_serves_the_services_path(
        browser: Callable[[ProxydProcess], Any], proxyd: Proxyd) -> None:
    # the app is mounted on /services of its own address, so anything else it answers "not mine"
    with PrefixApp(base="/services") as app:
        web = free_port()
        proxy = proxyd(base_config(
            proxy={"name": "test", "fqdn": "localhost", "enabled": True},
            instances=[{"name": "gamma", "web": f"http://127.0.0.1:{app.port}"}],
            services={"web": {"mode": "rest_only", "port": web}}))
        origin = f"https://localhost:{web}"
        page = browser(proxy).new_page()
        r = page.goto(f"{origin}/gamma/")
        assert r is not None and r.status == 404
        assert "not mine" not in page.inner_text("body")  # the proxy answered, the app was never asked
        got = page.evaluate("""async () => {
            const r = await fetch("/gamma/services/echo", {headers: {"Accept": "application/json"}});
            return {status: r.status, body: await r.json()};
        }""")
        assert got["status"] == 200
        assert got["body"]["path"] == "/services/echo"
        assert got["body"]["headers"]["x-forwarded-host"] == "localhost"
        r = page.goto(f"{origin}/gamma/services/home")
        assert r is not None and r.status == 401  # the app's own answer, passed through


def test_the_browser_trusts_only_the_pinned_proxy_key(browser: Callable[[ProxydProcess], Any], proxyd: Proxyd) -> None:
    """The pin is what makes the pages above load: a browser pinned to another proxy's key refuses."""
    from playwright.sync_api import Error

    with PrefixApp() as app:
        configs = [base_config(proxy={"name": "test", "fqdn": "localhost", "enabled": True},
                               instances=[{"name": "beta", "web": app.url}],
                               services={"web": {"mode": "web_and_rest", "port": free_port()}}) for _ in range(2)]
        served, other = proxyd(configs[0]), proxyd(configs[1])
        assert spki_pin(served) != spki_pin(other)  # each state dir made its own key
        page = browser(other).new_page()
        with pytest.raises(Error, match="ERR_CERT"):
            page.goto(f"https://localhost:{configs[0]['services']['web']['port']}/beta/")
