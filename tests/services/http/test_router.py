"""The router through a real proxyd process over real TLS to real backends on loopback."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support import ProxydProcess, base_config, free_port

Proxyd = Callable[..., ProxydProcess]


def web_config(backend: str, *, mode: str = "web_and_rest", rev: int = 1, **extra: Any) -> dict[str, Any]:
    return base_config(
        revision=rev,
        instances=[{"name": "mycompany", "web": backend}, {"name": "other", "web": backend + "/o"}],
        services={"web": {"mode": mode, "port": free_port(), "redirect_url": "https://www.example.com/why"}},
        **extra,
    )


def url(p: ProxydProcess, path: str) -> str:
    return f"https://127.0.0.1:{p.config['services']['web']['port']}{path}"


def client() -> httpx.Client:
    return httpx.Client(verify=False, timeout=20)


def raw(port: int, data: bytes, tls: bool = True, read_all: bool = True) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    s.sendall(data)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
            if not read_all:
                break
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    s.close()
    return out


def test_web_and_rest_mode_routes_by_instance(proxyd: Proxyd, backend: str) -> None:
    p = proxyd(web_config(backend))
    with client() as c:
        r = c.get(url(p, "/"), follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == "https://www.example.com/why"
        r = c.get(url(p, "/mycompany"), follow_redirects=False)
        assert r.status_code == 301 and r.headers["location"] == "/mycompany/"
        r = c.get(url(p, "/mycompany/ui/index.html?x=1"), headers={"X-Forwarded-For": "6.6.6.6"})
        seen = r.json()
        assert seen["path"] == "/ui/index.html?x=1"
        assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"  # the client's claim is dropped
        assert seen["headers"]["x-forwarded-proto"] == "https"
        # mode rewrite (the default): the backend is not told a prefix, its cookie paths get it
        assert "x-forwarded-prefix" not in seen["headers"]
        port = p.config["services"]["web"]["port"]
        assert (seen["headers"]["x-forwarded-host"], seen["headers"]["x-forwarded-port"]) == ("127.0.0.1", str(port))
        assert r.headers.get_list("set-cookie") == ["sid=1; Path=/mycompany/app; HttpOnly", "lang=de"]
        assert c.get(url(p, "/other/services/x")).json()["path"] == "/o/services/x"
        assert c.post(url(p, "/mycompany/services/calls"), content=b"x" * 1000).json()["body_bytes"] == 1000
        unknown, known_but_no_path = c.get(url(p, "/nosuch/")), c.get(url(p, "/nosuch"))
        assert unknown.status_code == known_but_no_path.status_code == 404
        assert unknown.content == known_but_no_path.content


def test_rest_only_mode_and_live_switch_to_it(proxyd: Proxyd, backend: str) -> None:
    cfg = web_config(backend)
    p = proxyd(cfg)
    with client() as c:
        assert c.get(url(p, "/mycompany/")).status_code == 200
        web = {**cfg["services"]["web"], "mode": "rest_only"}
        cfg = {**cfg, "revision": 2, "services": {**cfg["services"], "web": web}}
        p.reload(cfg)
        ui = c.get(url(p, "/mycompany/"))
        assert ui.status_code == 404 and ui.content == c.get(url(p, "/nosuch/")).content
        assert c.get(url(p, "/mycompany/servicesX")).status_code == 404
        assert c.get(url(p, "/mycompany/services")).json()["path"] == "/services"
        assert c.get(url(p, "/mycompany/services/v1/users")).status_code == 200


def test_application_exposes_only_its_prefix(proxyd: Proxyd, backend: str) -> None:
    port = free_port()
    cfg = base_config(applications=[{"name": "procurat", "port": port, "tls": True, "public_prefix": "/api/",
                                     "upstream": backend + "/procurat/api/v1/"}])
    proxyd(cfg)
    with client() as c:
        seen = c.get(f"https://127.0.0.1:{port}/api/students?id=3").json()
        assert seen["path"] == "/procurat/api/v1/students?id=3"
        assert seen["headers"]["host"] == backend.removeprefix("http://")
        for path in ("/", "/api", "/procurat/api/v1/students", "/admin/", "/apix/y"):
            assert c.get(f"https://127.0.0.1:{port}{path}").status_code == 404, path
    for attack in (b"/api/../admin", b"/api/%2e%2e/admin", b"/api/..%2fadmin", b"/api//x", b"/api/x;y"):
        resp = raw(port, b"GET " + attack + b" HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        assert resp.startswith(b"HTTP/1.1 400 "), (attack, resp[:60])


def test_https_upstream_is_verified_by_default(proxyd: Proxyd) -> None:
    """A backend with a certificate no CA vouches for is refused (502) unless verify is off."""
    import tempfile
    from http.server import ThreadingHTTPServer
    from pathlib import Path

    from proxyd.tls import make_self_signed
    from tests.services.http.conftest import Echo

    cert, key = make_self_signed("127.0.0.1", ["127.0.0.1"])
    with tempfile.TemporaryDirectory() as d:
        Path(d, "c.pem").write_text(cert)
        Path(d, "k.pem").write_text(key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(f"{d}/c.pem", f"{d}/k.pem")
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    upstream = f"https://127.0.0.1:{server.server_address[1]}/v1/"
    a, b = free_port(), free_port()
    proxyd(base_config(applications=[
        {"name": "strict", "port": a, "tls": False, "upstream": upstream},
        {"name": "lax", "port": b, "tls": False, "upstream": upstream, "verify_upstream": False},
    ]))
    with httpx.Client(timeout=20) as c:
        assert c.get(f"http://127.0.0.1:{a}/api/x").status_code == 502
        assert c.get(f"http://127.0.0.1:{b}/api/x").json()["path"] == "/v1/x"
    server.shutdown()
    server.server_close()


SMUGGLING = [
    (b"POST /mycompany/x HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    (b"POST /mycompany/x HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST /mycompany/x HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    (b"GET /mycompany/x HTTP/1.1\r\nHost: proxy.test\r\nX: a\r\n b\r\n\r\n", 400),
    (b"GET /mycompany/x HTTP/1.1\nHost: proxy.test\n\n", 400),  # bare LF: 400 at once, not after the deadline
    (b"GET /mycompany/x HTTP/1.1\r\nHost: proxy.test\r\nX: a\x00\r\n\r\n", 400),
    (b"POST /mycompany/x HTTP/1.1\r\nHost: proxy.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\nHost: proxy.test\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: proxy.test\r\nCookie: " + b"c" * 40000 + b"\r\n\r\n", 431),
    (b"GET http://evil.example/ HTTP/1.1\r\nHost: proxy.test\r\n\r\n", 400),
    (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: proxy.test\r\n\r\n", 405),
    (b"OPTIONS * HTTP/1.1\r\nHost: proxy.test\r\n\r\n", 400),
]


@pytest.mark.parametrize(("request_bytes", "status"), SMUGGLING)
def test_hardening_rules_on_raw_sockets(proxyd: Proxyd, backend: str, request_bytes: bytes, status: int | None) -> None:
    p = proxyd(web_config(backend))
    port = p.config["services"]["web"]["port"]
    if status is None:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        s = ctx.wrap_socket(s)
        s.sendall(request_bytes)
        s.settimeout(30)
        data = s.recv(1000)
        s.close()
        assert data.startswith(b"HTTP/1.1 408") or data == b""
        assert p.status()["services"]["http"]["counters"].get("requests", 0) == 0  # never forwarded
        return
    resp = raw(port, request_bytes)
    assert resp.startswith(f"HTTP/1.1 {status} ".encode()), resp[:80]
    counters = p.status()["services"]["http"]["counters"]
    assert counters.get("responses_2xx", 0) == 0
    if b"zz\r\n" not in request_bytes:  # a chunked body breaks only after the head went upstream
        assert counters.get("backend_connects", 0) == 0


def test_body_size_limit_and_header_timeout(proxyd: Proxyd, backend: str) -> None:
    p = proxyd(web_config(backend))
    port = p.config["services"]["web"]["port"]
    resp = raw(port, b"POST /mycompany/x HTTP/1.1\r\nHost: proxy.test\r\nContent-Length: 99999999999\r\n\r\n")
    assert resp.startswith(b"HTTP/1.1 413 ")


def test_websocket_echo_through_the_proxy(proxyd: Proxyd, ws_backend: str) -> None:
    from websockets.sync.client import connect

    p = proxyd(web_config(ws_backend))
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    port = p.config["services"]["web"]["port"]
    with connect(f"wss://127.0.0.1:{port}/mycompany/live", ssl=ctx, open_timeout=20) as ws:
        for i in range(3):
            ws.send(f"hi{i}")
            assert ws.recv(timeout=20) == f"echo:hi{i}:/live"


def rss_kib(pid: int) -> int:
    from pathlib import Path

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_100mb_bodies_stream_both_ways_with_flat_memory(proxyd: Proxyd, backend: str) -> None:
    p = proxyd(web_config(backend))
    assert p.proc is not None
    before = rss_kib(p.proc.pid)
    total = 100 * 2**20

    def body():  # type: ignore[no-untyped-def]
        block = b"y" * 2**20
        for _ in range(100):
            yield block

    with client() as c:
        r = c.post(url(p, "/mycompany/upload"), content=body())
        assert r.json()["body_bytes"] == total  # chunked upload, re-framed upstream
        got = 0
        with c.stream("GET", url(p, "/mycompany/big")) as resp:
            for chunk in resp.iter_bytes():
                got += len(chunk)
        assert got == total
    grown = rss_kib(p.proc.pid) - before
    assert grown < 40 * 1024, f"proxy RSS grew by {grown} KiB while streaming 200 MB"


def test_live_reconfiguration_loses_no_request(proxyd: Proxyd, backend: str) -> None:
    cfg = web_config(backend)
    p = proxyd(cfg)
    failures: list[str] = []
    done = threading.Event()
    count = [0]

    def loop() -> None:
        with client() as c:
            while not done.is_set():
                try:
                    r = c.get(url(p, "/mycompany/services/ping"))
                    if r.status_code != 200:
                        failures.append(f"status {r.status_code}")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                count[0] += 1

    workers = [threading.Thread(target=loop) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for rev in range(2, 52):
            seen = count[0]
            deadline = time.monotonic() + 20
            while count[0] == seen and time.monotonic() < deadline:  # traffic between every two swaps
                time.sleep(0.01)
            target = "/o" if rev % 2 else ""
            cfg = {**cfg, "revision": rev,
                   "instances": [{"name": "mycompany", "web": backend + target}, {"name": "other", "web": backend}]}
            p.reload(cfg)
    finally:
        done.set()
        for w in workers:
            w.join(30)
    assert failures == []
    assert count[0] >= 50
    http = p.status()["services"]["http"]
    assert http["listeners"] == [f"https://127.0.0.1:{cfg['services']['web']['port']}"]


def test_sighup_with_broken_config_keeps_serving(proxyd: Proxyd, backend: str) -> None:
    cfg = web_config(backend)
    p = proxyd(cfg)
    p.reload({**cfg, "revision": 2, "instances": [{"name": "BAD NAME"}]}, wait=False)
    time.sleep(1.5)
    assert p.status()["revision"] == 1
    with client() as c:
        assert c.get(url(p, "/mycompany/x")).status_code == 200


def test_backend_down_is_a_quick_502_and_others_keep_working(proxyd: Proxyd, backend: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = base_config(instances=[{"name": "down", "web": dead}, {"name": "up", "web": backend}],
                      services={"web": {"mode": "web_and_rest", "port": free_port()}})
    p = proxyd(cfg)
    with client() as c:
        assert c.get(url(p, "/down/x")).status_code == 502
        assert c.get(url(p, "/up/x")).status_code == 200


def test_allow_sources_closes_other_clients(proxyd: Proxyd, backend: str) -> None:
    cfg = web_config(backend, allow_sources=["10.9.9.0/24"])
    p = proxyd(cfg)
    with client() as c, pytest.raises(httpx.HTTPError):
        c.get(url(p, "/mycompany/x"))
    assert p.status()["access_refused"]["http"] >= 1
    p.reload({**cfg, "revision": 2, "allow_sources": ["127.0.0.0/8"]})
    with client() as c:
        assert c.get(url(p, "/mycompany/x")).status_code == 200


def test_status_shows_counters(proxyd: Proxyd, backend: str) -> None:
    p = proxyd(web_config(backend))
    with client() as c:
        c.get(url(p, "/mycompany/x"))
        c.get(url(p, "/mycompany/y"))
    st = p.status()["services"]["http"]
    assert st["counters"]["responses_2xx"] == 2
    assert st["counters"]["backend_connects"] == 1  # the pooled connection was reused
    assert json.dumps(st)
