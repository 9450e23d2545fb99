"""A real proxyd with HTTP, provisioning, SIP, media and XMPP up, and a little real traffic of
each kind through it; scraped over the admin TCP port before and after, as Prometheus would.

Shared by the tests that check /metrics itself (test_metrics_promtool.py) and the ones that check
what reads it (the alert rules and the Grafana dashboard in contrib/, test_contrib_monitoring.py).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.parser import text_string_to_metric_families

from tests.support import ProxydProcess, base_config, free_port, free_tcp_udp_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def hello_backend() -> Iterator[int]:
    """An HTTP backend on loopback that answers every GET with 200 `hello`; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def get(port: int, path: str) -> bytes:
    """One GET on its own connection, read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: proxy.test\r\nConnection: close\r\n\r\n".encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def scrape(port: int) -> str:
    raw = get(port, "/metrics")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"Content-Type: text/plain; version=0.0.4" in head
    return body.decode()


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def options(call_id: str, to: str, via_port: int) -> bytes:
    return (f"OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK-{call_id};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@{to}>;tag=a1\r\nTo: <sip:{to}>\r\nCall-ID: {call_id}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()


def answer_ok(request: bytes) -> bytes:
    """What a PBX answers: 200 with every Via, From, To (+tag), Call-ID and CSeq copied."""
    lines = request.decode().split("\r\n")
    keep = [ln for ln in lines if ln.split(":", 1)[0] in ("Via", "From", "Call-ID", "CSeq")]
    to = next(ln for ln in lines if ln.startswith("To:"))
    return "\r\n".join(["SIP/2.0 200 OK", *keep, to + ";tag=pbx", "Content-Length: 0", "", ""]).encode()


@dataclass
class Traffic:
    proxy: ProxydProcess
    admin_port: int
    before: Samples  # the scrape right after start
    after: Samples  # the scrape once the traffic below has been counted
    text: str  # the exposition text of `after`

    def families(self) -> set[str]:
        """Every family and sample name in the last scrape (`x`, `x_total`, `x_bucket`, ...)."""
        return {name for name, _ in self.after} | {f.name for f in text_string_to_metric_families(self.text)}


def run_traffic(start: Callable[..., ProxydProcess], backend: int) -> Traffic:
    """Start proxyd (through the `proxyd` fixture's `start`) and send it: HTTP one forwarded request
    and one refused (non-canonical path); provisioning one lookup that finds nothing; SIP one
    OPTIONS the PBX answers and one for a domain nobody serves; XMPP bytes that start no stream."""
    admin, app_port, prov_http = free_port(), free_port(), free_port()
    sip_port, xmpp_port = free_tcp_udp_port(), free_port()
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        pbx.bind(("127.0.0.1", 0))
        phone.bind(("127.0.0.1", 0))
        pbx.settimeout(10)
        phone.settimeout(10)
        cfg = base_config(
            instances=[{"name": "pbx", "sip": f"udp:127.0.0.1:{pbx.getsockname()[1]}", "sip_domains": ["pbx.test"],
                        "xmpp": f"127.0.0.1:{free_port()}", "xmpp_domains": ["pbx.test"]}],
            applications=[{"name": "a", "port": app_port, "tls": False, "upstream": f"http://127.0.0.1:{backend}/"}],
            services={"sip": {"mode": "udp", "udp_port": sip_port, "tls_port": free_port()},
                      "provisioning": {"mode": "http_and_https", "http_port": prov_http, "https_port": free_port()},
                      "xmpp": {"enabled": True, "port": xmpp_port, "direct_tls_port": free_port()}})
        p = start(cfg, extra_args=("--admin", f"127.0.0.1:{admin}"))
        before = samples(scrape(admin))

        assert get(app_port, "/api/x").startswith(b"HTTP/1.1 200 ")
        assert get(app_port, "/api/../b").startswith(b"HTTP/1.1 400 ")
        assert get(prov_http, "/p/pbx/nosuchdevice").startswith(b"HTTP/1.1 404 ")
        phone.sendto(options("m1", "pbx.test", phone.getsockname()[1]), ("127.0.0.1", sip_port))
        req, src = pbx.recvfrom(65536)
        pbx.sendto(answer_ok(req), src)
        assert phone.recv(65536).startswith(b"SIP/2.0 200 ")
        phone.sendto(options("m2", "other.test", phone.getsockname()[1]), ("127.0.0.1", sip_port))
        assert phone.recv(65536).startswith(b"SIP/2.0 404 ")
        with socket.create_connection(("127.0.0.1", xmpp_port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while s.recv(4096):
                pass

        # the XMPP refusal is counted last (after the peer closed); wait for it
        deadline = time.monotonic() + 10
        while True:
            text = scrape(admin)
            after = samples(text)
            if after.get(("pforte_xmpp_refused_connections_total", frozenset({("reason", "garbage")}))) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        pbx.close()
        phone.close()
    return Traffic(p, admin, before, after, text)
