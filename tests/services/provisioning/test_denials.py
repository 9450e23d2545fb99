"""Every provisioning denial is one response, and every denial counts: through a real proxyd, raw
sockets, and a recording backend that fails the test on any request it must not get."""

from __future__ import annotations

import base64
import re
import secrets
import socket
from collections.abc import Callable

import pytest

from services.http.http1 import parse_request_head
from services.http.routes import Forward, Refuse
from services.provisioning.routes import DENIED, FailLimiter, ProvisioningTable, prefix_of, table_for
from services.provisioning.token import encode_token, normalize_mac
from tests.services.http.test_proxy import Backend, Handler, read_until
from tests.support import ProxydProcess, base_config, free_port

KEY = base64.b64encode(secrets.token_bytes(32)).decode()
KNOWN, UNKNOWN, FORBIDDEN = "08C25A4F0321", "08C25A4F0322", "08C25A4F0324"
Proxyd = Callable[..., ProxydProcess]


# -- unit -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mac", ["01005E000001", "FFFFFFFFFFFF", "000000000000", "03:00:00:00:00:01",
                                 "08c2:5a4f:0321", "08:C2-5A:4F:03:21", "08.c2.5a.4f.03.21", " 08C25A4F0321",
                                 "08:C2:5A:4F:03:21:", "08C25A4F0321\n"])
def test_only_unicast_macs_in_the_documented_spellings_identify_a_device(mac: str) -> None:
    assert normalize_mac(mac) is None


def head(raw: bytes):  # type: ignore[no-untyped-def]
    return parse_request_head(raw.replace(b"\r\n", b"\r\nHost: p\r\n", 1))


def test_methods_bodies_and_other_spellings_are_the_one_denial() -> None:
    table = table_for("https", None, (("mycompany", "http://127.0.0.1:9/prov/{MAC}"),))
    get = head(f"GET /p/mycompany/{KNOWN} HTTP/1.1\r\n\r\n".encode())
    ok = table.route(f"/p/mycompany/{KNOWN}", "", "10.0.0.1", get)
    assert isinstance(ok, Forward) and ok.deny is table and table.statuses == {403, 404}
    for raw in (f"POST /p/mycompany/{KNOWN} HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
                f"GET /p/mycompany/{KNOWN} HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
                f"GET /p/mycompany/{KNOWN} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                f"OPTIONS /p/mycompany/{KNOWN} HTTP/1.1\r\n\r\n",
                "GET /p/mycompany/%3008C25A4F0321 HTTP/1.1\r\n\r\n"):  # canonicalisable, but not the URL
        h = head(raw.encode())
        assert table.route(f"/p/mycompany/{KNOWN}", "", "10.0.0.1", h) == DENIED, raw
    assert table.unreadable("an escaped '/'", "10.0.0.1") == DENIED


def test_the_limiter_counts_per_prefix_and_its_tables_are_bounded() -> None:
    now = [0.0]
    lim = FailLimiter(limit=5, prefix_limit=10, window=60, block=300, size=8, clock=lambda: now[0])
    for i in range(10):  # ten addresses of one /24, each far below its own limit
        lim.failed(f"192.0.2.{i}")
    assert lim.is_blocked("192.0.2.200") and not lim.is_blocked("192.0.3.1")
    assert lim.blocked_for("192.0.2.77") == 300
    assert prefix_of("2001:db8:1:2:3::4") == "2001:db8:1:2::/64" and prefix_of("::ffff:192.0.2.9") == "192.0.2.0/24"
    for i in range(1000):  # a scan from ever new networks keeps at most `size` entries per table
        lim.failed(f"10.{i // 256}.{i % 256}.1")
    assert len(lim.addresses.entries) == len(lim.prefixes.entries) == 8
    now[0] = 301
    assert not lim.is_blocked("192.0.2.200")


def test_blocked_is_429_with_retry_after_and_counts_nothing() -> None:
    now = [0.0]
    table = ProvisioningTable("https", None, (), FailLimiter(limit=2, clock=lambda: now[0]))
    table.route("/p/x/y", "", "10.0.0.1")
    table.route("/p/x/y", "", "10.0.0.1")
    now[0] = 100.5
    r = table.route("/p/x/y", "", "10.0.0.1")
    assert isinstance(r, Refuse) and (r.status, r.extra, r.close) == (429, b"Retry-After: 200\r\n", True)


# -- through a real proxyd --------------------------------------------------------------------------

def recording() -> Handler:
    """Answers like a provisioning server (200 known device, 404 unknown, 403 forbidden)."""
    def handler(conn: socket.socket, b: Backend) -> None:
        buf = bytearray()
        while (h := b.read_head(conn, buf)) is not None:
            method, path = h.split(b" ", 2)[:2]
            status = {f"/prov/{KNOWN}": b"200 OK", f"/prov/{FORBIDDEN}": b"403 Forbidden"}.get(path.decode(),
                                                                                          b"404 Not Found")
            body = b"cfg" if status.startswith(b"200") else b"<html>backend says no</html>"
            conn.sendall(b"HTTP/1.1 %s\r\nDate: Mon, 07 Dec 2026 09:00:00 GMT\r\nServer: prov\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (status, len(body), b"" if method == b"HEAD" else body))
    return handler


def start(proxyd: Proxyd, backend: Backend, mode: str) -> int:
    port = free_port()
    proxyd(base_config(
        instances=[{"name": "mycompany", "provisioning": f"http://127.0.0.1:{backend.port}/prov/{{MAC}}"}],
        services={"provisioning": {"mode": "http_and_https", "https_port": free_port(), "http_port": port}}
        if mode == "trusted" else
        {"provisioning": {"mode": "encrypted", "https_port": port, "http_port": free_port(), "key": KEY}}))
    return port


def ask(port: int, raw: bytes, source: str = "127.0.0.1", tls: bool = False) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    if tls:
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    with s:  # every request asks for close: denials close anyway, and read_until reads to the end
        s.sendall(raw.replace(b"\r\n", b"\r\nConnection: close\r\n", 1))
        return read_until(s, lambda b: False)


def without_date(resp: bytes) -> bytes:
    return re.sub(rb"\r\nDate: [^\r]*", b"", resp)


def check_backend(backend: Backend, allowed: set[bytes]) -> None:
    for h in backend.requests:
        line = h.split(b"\r\n", 1)[0]
        assert line.split(b" ")[0] in (b"GET", b"HEAD") and line.split(b" ")[1] in allowed, f"backend got {line!r}"


def test_trusted_mode_every_denial_is_the_same_bytes(  # type: ignore[no-untyped-def]
        proxyd: Proxyd, scripted) -> None:
    backend = scripted(recording())
    port = start(proxyd, backend, "trusted")
    ok = ask(port, f"GET /p/mycompany/{KNOWN} HTTP/1.1\r\nHost: p\r\n\r\n".encode())
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(b"cfg")
    denials = [f"GET /p/mycompany/{UNKNOWN} HTTP/1.1\r\nHost: p\r\n\r\n",  # backend 404
               f"GET /p/mycompany/{FORBIDDEN} HTTP/1.1\r\nHost: p\r\n\r\n",  # backend 403
               f"POST /p/mycompany/{KNOWN} HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n\r\nhello",
               f"PUT /p/mycompany/{KNOWN} HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\nhello\r\n0\r\n\r\n",
               "GET /p/mycompany/FFFFFFFFFFFF HTTP/1.1\r\nHost: p\r\n\r\n",  # broadcast
               "GET /p/mycompany/01005E000001 HTTP/1.1\r\nHost: p\r\n\r\n",  # group bit
               "GET /p/mycompany/000000000000 HTTP/1.1\r\nHost: p\r\n\r\n",
               "GET /p/mycompany/08C25A4F032 HTTP/1.1\r\nHost: p\r\n\r\n",
               "GET /p/nosuch/08C25A4F0321 HTTP/1.1\r\nHost: p\r\n\r\n",
               "GET /p/mycompany/08C25A4F0321%00 HTTP/1.1\r\nHost: p\r\n\r\n",
               "GET /p/mycompany/08C25A4F0321;x HTTP/1.1\r\nHost: p\r\n\r\n",
               "GET /p/mycompany%2F08C25A4F0321 HTTP/1.1\r\nHost: p\r\n\r\n",
               "GET /p/mycompany/%3008C25A4F0321 HTTP/1.1\r\nHost: p\r\n\r\n",
               "GET /p/mycompany/../mycompany/08C25A4F0321 HTTP/1.1\r\nHost: p\r\n\r\n",
               "GET /x HTTP/1.1\r\nHost: p\r\n\r\n"]
    answers = [ask(port, d.encode(), source=f"127.0.1.{i + 1}") for i, d in enumerate(denials)]
    assert {without_date(a) for a in answers} == {answers[0]}, answers
    assert answers[0].startswith(b"HTTP/1.1 404 Not Found\r\n") and b"backend" not in answers[0]
    check_backend(backend, {f"/prov/{KNOWN}".encode(), f"/prov/{UNKNOWN}".encode(), f"/prov/{FORBIDDEN}".encode()})
    assert len(backend.requests) == 3  # the known device, and the two the backend itself said no to


def test_encrypted_mode_every_denial_is_the_same_bytes(  # type: ignore[no-untyped-def]
        proxyd: Proxyd, scripted) -> None:
    backend = scripted(recording())
    port = start(proxyd, backend, "encrypted")
    t, gone = encode_token(KEY, "mycompany", KNOWN), encode_token(KEY, "mycompany", UNKNOWN)
    assert ask(port, f"GET /p/{t} HTTP/1.1\r\nHost: p\r\n\r\n".encode(), tls=True).startswith(b"HTTP/1.1 200")
    denials = [f"GET /p/{gone} HTTP/1.1\r\nHost: p\r\n\r\n",  # backend 404
               f"GET /p/{t[:-1]}{'A' if t[-1] != 'A' else 'B'} HTTP/1.1\r\nHost: p\r\n\r\n",  # tampered
               f"GET /p/{encode_token(KEY, 'other', KNOWN)} HTTP/1.1\r\nHost: p\r\n\r\n",  # unknown instance
               f"POST /p/{t} HTTP/1.1\r\nHost: p\r\nContent-Length: 5\r\n\r\nhello",
               f"GET /p/{t}%2Fx HTTP/1.1\r\nHost: p\r\n\r\n", f"GET /p/{t};x HTTP/1.1\r\nHost: p\r\n\r\n",
               f"GET /p/{t}%00 HTTP/1.1\r\nHost: p\r\n\r\n",
               f"GET /p/%{ord(t[0]):02X}{t[1:]} HTTP/1.1\r\nHost: p\r\n\r\n",  # a needless escape
               "GET /p/not-a-token HTTP/1.1\r\nHost: p\r\n\r\n",
               f"GET /p/mycompany/{KNOWN} HTTP/1.1\r\nHost: p\r\n\r\n"]
    answers = [ask(port, d.encode(), source=f"127.0.2.{i + 1}", tls=True) for i, d in enumerate(denials)]
    assert {without_date(a) for a in answers} == {answers[0]}, answers
    check_backend(backend, {f"/prov/{KNOWN}".encode(), f"/prov/{UNKNOWN}".encode()})
    assert len(backend.requests) == 2


def test_guessing_macs_from_many_addresses_of_one_24_is_throttled(  # type: ignore[no-untyped-def]
        proxyd: Proxyd, scripted) -> None:
    backend = scripted(recording())
    port = start(proxyd, backend, "trusted")
    answers = []
    for i in range(100):  # one guess per address: no address comes near its own limit
        mac = f"08C25A{i:06X}"
        answers.append(ask(port, f"GET /p/mycompany/{mac} HTTP/1.1\r\nHost: p\r\n\r\n".encode(),
                           source=f"127.0.3.{i + 1}"))
    limited = [a for a in answers if a.startswith(b"HTTP/1.1 429 Too Many Requests\r\n")]
    assert len(limited) == 40 and all(b"\r\nRetry-After: " in a for a in limited)
    assert len(backend.requests) == 60  # the prefix limit: the 61st guess onwards never reached the backend
    # the real device in that network waits too; one elsewhere does not
    assert ask(port, f"GET /p/mycompany/{KNOWN} HTTP/1.1\r\nHost: p\r\n\r\n".encode(),
               source="127.0.3.250").startswith(b"HTTP/1.1 429")
    assert ask(port, f"GET /p/mycompany/{KNOWN} HTTP/1.1\r\nHost: p\r\n\r\n".encode(),
               source="127.0.4.1").startswith(b"HTTP/1.1 200")
