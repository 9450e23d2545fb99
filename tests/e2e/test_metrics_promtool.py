"""A real proxyd with HTTP, provisioning, SIP, media and XMPP up takes real traffic; its /metrics,
scraped over the admin TCP port as Prometheus would, moves with that traffic and passes
`promtool check metrics` without a single remark."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ProxydProcess, base_config, free_port, free_tcp_udp_port, require_peer


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server.server_address[1]
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


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
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


def test_metrics_after_real_traffic_are_promtool_clean(proxyd: Callable[..., ProxydProcess], backend: int) -> None:
    promtool = require_peer("promtool")
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
        p = proxyd(cfg, extra_args=("--admin", f"127.0.0.1:{admin}"))
        before = samples(scrape(admin))

        # HTTP: one forwarded request, one refused for a non-canonical path
        assert get(app_port, "/api/x").startswith(b"HTTP/1.1 200 ")
        assert get(app_port, "/api/../b").startswith(b"HTTP/1.1 400 ")
        # provisioning: a lookup that finds nothing
        assert get(prov_http, "/p/pbx/nosuchdevice").startswith(b"HTTP/1.1 404 ")
        # SIP: an OPTIONS the PBX answers, and one for a domain nobody serves (404 from the proxy)
        phone.sendto(options("m1", "pbx.test", phone.getsockname()[1]), ("127.0.0.1", sip_port))
        req, src = pbx.recvfrom(65536)
        pbx.sendto(answer_ok(req), src)
        assert phone.recv(65536).startswith(b"SIP/2.0 200 ")
        phone.sendto(options("m2", "other.test", phone.getsockname()[1]), ("127.0.0.1", sip_port))
        assert phone.recv(65536).startswith(b"SIP/2.0 404 ")
        # XMPP: bytes that cannot start a stream
        with socket.create_connection(("127.0.0.1", xmpp_port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while s.recv(4096):
                pass

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

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in after, f"{name}{labels} missing from the scrape"
        return after[key] - before.get(key, 0.0)

    assert moved("pforte_http_requests_total", service="http") == 2
    assert moved("pforte_http_responses_total", service="http", code_class="2xx") == 1
    assert moved("pforte_http_refused_requests_total", service="http", code="400") == 1
    assert moved("pforte_http_upstream_connects_total", service="http") == 1
    assert moved("pforte_http_upstream_connect_seconds_count", service="http") == 1
    assert moved("pforte_http_upstream_first_byte_seconds_count", service="http") == 1
    assert moved("pforte_http_upstream_first_byte_seconds_bucket", service="http", le="+Inf") == 1
    # >= 0, not > 0: uvloop's loop.time() moves in whole milliseconds, a loopback answer can take less
    assert 0 <= moved("pforte_http_upstream_first_byte_seconds_sum", service="http") < 10
    assert moved("pforte_http_request_duration_seconds_count", service="http") == 1
    assert moved("pforte_http_request_duration_seconds_sum", service="http") >= \
        moved("pforte_http_upstream_first_byte_seconds_sum", service="http")
    assert moved("pforte_http_refused_requests_total", service="provisioning", code="404") == 1
    assert moved("pforte_sip_messages_forwarded_total", kind="request") == 1
    assert moved("pforte_sip_messages_forwarded_total", kind="response") == 1
    assert moved("pforte_sip_local_responses_total", code="404") == 1
    assert moved("pforte_sip_routing_failures_total", reason="unknown_domain") == 1
    assert moved("pforte_xmpp_refused_connections_total", reason="garbage") == 1
    for svc in ("http", "provisioning", "sip", "media", "xmpp"):
        assert after[("pforte_service_up", frozenset({("service", svc)}))] == 1
    assert after[("pforte_xmpp_instance_active_sessions", frozenset({("instance", "pbx")}))] == 0
    assert after[("pforte_config_revision", frozenset())] == 1
    assert after[("pforte_media_port_headroom_ratio", frozenset())] == 1
    not_after = after[("pforte_tls_certificate_not_after_timestamp_seconds",
                       frozenset({("certificate", "server"), ("self_signed", "true")}))]
    assert not_after > time.time() + 800 * 86400  # the self-signed one lasts 825 days
    assert after[("process_open_fds", frozenset())] > 0
    assert after[("process_max_fds", frozenset())] > 0
    assert after[("process_resident_memory_bytes", frozenset())] > 0
    build = [labels for name, labels in after if name == "pforte_build_info"]
    assert len(build) == 1 and {k for k, _ in build[0]} == {"version", "python", "uvloop"}
    # no client address, path or Call-ID in any label
    for bad in ("127.0.0.1", "/api/../b", "nosuchdevice", "m1", "other.test"):
        assert not any(bad == v for _, labels in after for _, v in labels), bad

    # every family docs/operations.md lists is in the scrape (manager ones: managed mode only)
    documented = set(re.findall(r"`((?:pforte|process)_[a-z_]+)", (Path(__file__).parents[2] / "docs" /
                                                                    "operations.md").read_text()))
    scraped = {name for name, _ in after} | {f.name for f in text_string_to_metric_families(text)}
    missing = {n for n in documented - scraped if not n.startswith("pforte_manager_") and not n.endswith("_")}
    assert missing == set()

    res = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert (res.returncode, res.stdout, res.stderr) == (0, "", ""), text
    assert "event=config_applied" in p.output()
