"""The HTTP router's prefix rule end to end: a real web app (tests/e2e/apps/prefix_app.py) behind a
real proxyd, over TLS, with a client that keeps cookies and follows redirects.

Issue #19 (5): an app that honoured X-Forwarded-Prefix and set `Path=/alpha/` got `/alpha/alpha/`;
an app that did not had `Location: /home` passed through unchanged, leaving the instance.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.apps.prefix_app import PrefixApp
from tests.support import ProxydProcess, base_config, free_port

Proxyd = Callable[..., ProxydProcess]


@pytest.fixture
def apps() -> Iterator[tuple[PrefixApp, PrefixApp, PrefixApp]]:
    with PrefixApp(aware=False) as unaware, PrefixApp(aware=True) as aware, PrefixApp(base="/base") as mounted:
        yield unaware, aware, mounted


@pytest.fixture
def proxy(proxyd: Proxyd, apps: tuple[PrefixApp, PrefixApp, PrefixApp]) -> tuple[str, str]:
    unaware, aware, mounted = apps
    web, api = free_port(), free_port()
    proxyd(base_config(
        instances=[{"name": "beta", "web": unaware.url},  # web_prefix_mode "rewrite", the default
                   {"name": "alpha", "web": aware.url, "web_prefix_mode": "forward_prefix"}],
        applications=[{"name": "api", "port": api, "tls": True, "public_prefix": "/api/",
                       "upstream": mounted.url + "/"}],
        services={"web": {"mode": "web_and_rest", "port": web}}))
    return f"https://127.0.0.1:{web}", f"https://127.0.0.1:{api}"


def client() -> httpx.Client:
    return httpx.Client(verify=False, timeout=20)


@pytest.mark.e2e
def test_rewrite_mode_maps_an_unaware_apps_redirects_and_cookies_under_the_instance(proxy: tuple[str, str]) -> None:
    origin, _ = proxy
    with client() as c:
        r = c.post(f"{origin}/beta/login", data={"user": "bob"})
        assert r.status_code == 303
        assert r.headers["location"] == "/beta/home"
        assert r.headers["set-cookie"].startswith("sid=") and "; Path=/beta/;" in r.headers["set-cookie"]
        home = c.get(origin + r.headers["location"])
        assert (home.status_code, home.text) == (200, "hello bob\n")
        assert c.get(f"{origin}/alpha/home").status_code == 401  # the cookie stays with its instance
        assert c.get(f"{origin}/beta/self", follow_redirects=False).headers["location"] == f"{origin}/beta/home"
        assert c.get(f"{origin}/beta/refresh").headers["refresh"] == "0; url=/beta/home"
        seen = c.get(f"{origin}/beta/echo").json()["headers"]
        assert "x-forwarded-prefix" not in seen
        assert (seen["x-forwarded-host"], seen["x-forwarded-port"]) == ("127.0.0.1", origin.rsplit(":", 1)[1])
        out = c.get(f"{origin}/beta/logout", follow_redirects=True)
        assert str(out.url) == f"{origin}/beta/" and out.history[0].headers["location"] == f"{origin}/beta/"
        assert c.get(f"{origin}/beta/home").status_code == 401


@pytest.mark.e2e
def test_forward_prefix_mode_tells_an_aware_app_its_prefix_and_rewrites_nothing(proxy: tuple[str, str]) -> None:
    origin, _ = proxy
    with client() as c:
        seen = c.get(f"{origin}/alpha/echo").json()
        assert seen["path"] == "/echo" and seen["headers"]["x-forwarded-prefix"] == "/alpha"
        r = c.get(f"{origin}/alpha/login?user=carol")
        assert r.headers["location"] == "/alpha/home"
        assert "; Path=/alpha/;" in r.headers["set-cookie"]  # not /alpha/alpha/
        assert c.get(origin + r.headers["location"]).text == "hello carol\n"
        assert c.get(f"{origin}/beta/home").status_code == 401
        logout = c.get(f"{origin}/alpha/logout", follow_redirects=False)
        assert logout.headers["location"] == f"{origin}/alpha/"  # built from X-Forwarded-Proto/-Host/-Port


@pytest.mark.e2e
def test_an_application_maps_its_upstream_base_path_onto_the_public_prefix(proxy: tuple[str, str]) -> None:
    _, api = proxy
    with client() as c:
        r = c.get(f"{api}/api/login?user=dave")
        assert r.headers["location"] == "/api/home"  # the app wrote /base/home
        assert "; Path=/api/;" in r.headers["set-cookie"]
        assert c.get(api + r.headers["location"]).text == "hello dave\n"
        assert c.get(f"{api}/api/self", follow_redirects=False).headers["location"] == f"{api}/api/home"
        assert "x-forwarded-prefix" not in c.get(f"{api}/api/echo").json()["headers"]


@pytest.mark.e2e
def test_the_apps_websocket_echo_works_through_the_proxy(proxy: tuple[str, str]) -> None:
    from websockets.sync.client import connect

    origin, _ = proxy
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with connect(origin.replace("https", "wss") + "/beta/ws", ssl=ctx, open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
