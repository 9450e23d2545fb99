"""Issue #22 §4 through a real proxyd: one `event=http_request` line per request, whatever ended
it; X-Request-ID kept when valid, else replaced, and passed to the backend; requests counted by
route kind, method class and status class, refusals by reason class; and no provisioning token,
key or URL in any log line of the run."""

from __future__ import annotations

import base64
import re
import secrets
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.provisioning.token import encode_token, provisioning_url
from tests.e2e.secrets_in_logs import leaks, log_files
from tests.e2e.traffic import samples, scrape
from tests.support import ProxydProcess, base_config, free_port

KEY = base64.b64encode(secrets.token_bytes(32)).decode()
MAC = "805ec01a2b3c"


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/slow"):
            time.sleep(1.5)  # the client is gone by then
        else:
            Recorder.seen.append(self.headers.get("X-Request-ID"))
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[int]:
    Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def request(port: int, path: str, extra: str = "", tls: bool = False) -> bytes:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # proxyd's self-signed certificate
    s = ctx.wrap_socket(raw, server_hostname="proxy.test") if tls else raw
    with s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: proxy.test\r\n{extra}Connection: close\r\n\r\n".encode())
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def events(log: str) -> list[dict[str, str]]:
    out = []
    for line in log.splitlines():
        at = line.find("event=http_request ")
        if at >= 0:
            out.append(dict(re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line[at:])))
    return out


def wait_events(p: ProxydProcess, n: int) -> list[dict[str, str]]:
    deadline = time.monotonic() + 10
    while len(got := events(p.log_path.read_text())) < n:
        assert time.monotonic() < deadline, p.output()
        time.sleep(0.1)
    assert len(got) == n, got
    return got


def test_one_event_per_request_with_its_request_id_and_no_secret(proxyd, backend: int, tmp_path: Path) -> None:
    admin, app_port, prov_port = free_port(), free_port(), free_port()
    cfg = base_config(
        instances=[{"name": "pbx", "provisioning": f"http://127.0.0.1:{backend}/prov/{{mac}}"}],
        applications=[{"name": "crm", "port": app_port, "tls": False, "upstream": f"http://127.0.0.1:{backend}/"}],
        services={"provisioning": {"mode": "encrypted", "https_port": prov_port, "http_port": free_port(),
                                   "key": KEY}})
    p = proxyd(cfg, extra_args=("--admin", f"127.0.0.1:{admin}"))
    before = samples(scrape(admin))

    assert request(app_port, "/api/a", "X-Request-ID: lb-4f1c2a.7\r\n").startswith(b"HTTP/1.1 200 ")
    assert request(app_port, "/api/b", "X-Request-ID: not valid;x\r\n").startswith(b"HTTP/1.1 200 ")
    assert request(app_port, "/api/c").startswith(b"HTTP/1.1 200 ")
    assert request(app_port, "/api/../etc", "X-Request-ID: refused-1\r\n").startswith(b"HTTP/1.1 400 ")
    token = encode_token(KEY, "pbx", MAC)
    assert request(prov_port, f"/p/{token}/{MAC}.cfg", tls=True).startswith(b"HTTP/1.1 200 ")
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert request(prov_port, f"/p/{forged}", tls=True).startswith(b"HTTP/1.1 404 ")

    kept, replaced, added = Recorder.seen[:3]
    assert kept == "lb-4f1c2a.7"
    assert replaced and replaced != "not valid;x" and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", replaced)
    assert added and re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]+", added) and added != replaced
    assert len(Recorder.seen) == 4 and Recorder.seen[3]  # the provisioning backend gets one too

    after = samples(scrape(admin))
    ev = wait_events(p, 6)  # served requests' lines are written twice a second
    # refusals are written at once, served requests twice a second: put them in request order
    order = [kept, replaced, added, "refused-1"]
    app = sorted((e for e in ev if e["service"] == "http"), key=lambda e: order.index(e["request_id"]))
    prov = sorted((e for e in ev if e["service"] == "provisioning"), key=lambda e: e["status"])
    assert [e["request_id"] for e in app] == [kept, replaced, added, "refused-1"]
    assert [e["status"] for e in app] == ["200", "200", "200", "400"]
    assert all(e["route"] == "application" and e["client"] == "127.0.0.1" and e["method"] == "GET" for e in app)
    assert [e["instance"] for e in app] == ["crm", "crm", "crm", "-"]
    assert app[0]["upstream"] == f"127.0.0.1:{backend}" and float(app[0]["duration"]) >= 0
    assert int(app[0]["bytes"]) > 5  # head and body as sent to the client
    assert app[3]["refusal"] == "non_canonical_path" and "reason" in app[3]
    assert [(e["status"], e["instance"], e.get("refusal")) for e in prov] == [
        ("200", "pbx", None), ("404", "-", "unknown_token")]
    assert prov[0]["request_id"] == Recorder.seen[3]

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in after, f"{name}{labels} missing from the scrape"
        return after[key] - before[key]  # every series was there before the first request

    assert moved("pforte_http_requests_handled_total", service="http", route="application", method="read",
                 code_class="2xx") == 3
    assert moved("pforte_http_requests_handled_total", service="http", route="application", method="read",
                 code_class="4xx") == 1
    assert moved("pforte_http_refusals_total", service="http", route="application", reason="non_canonical_path") == 1
    assert moved("pforte_http_requests_handled_total", service="provisioning", route="provisioning",
                 method="read", code_class="2xx") == 1
    assert moved("pforte_http_refusals_total", service="provisioning", route="provisioning",
                 reason="unknown_token") == 1
    assert moved("pforte_http_refusals_total", service="provisioning", route="provisioning", reason="bad_mac") == 0

    # a backend that is down (502, with the error), a client that leaves before the answer (499)
    dead_port = free_port()
    cfg["applications"].append({"name": "dead", "port": dead_port, "tls": False,
                                "upstream": f"http://127.0.0.1:{free_port()}/"})
    cfg["revision"] = 2
    p.reload(cfg)
    assert request(dead_port, "/api/x").startswith(b"HTTP/1.1 502 ")
    with socket.create_connection(("127.0.0.1", app_port), timeout=10) as s:
        s.sendall(b"GET /api/slow HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
        time.sleep(0.3)  # forwarded: the backend has it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # then a reset, not a FIN
    dead, left = wait_events(p, len(ev) + 2)[len(ev):]
    assert (dead["status"], dead["instance"], dead["route"]) == ("502", "dead", "application")
    assert "connect failed" in dead["error"] and "refusal" not in dead
    assert (left["status"], left["instance"], left["bytes"]) == ("499", "crm", "0")

    used = {"provisioning key": KEY, "token": token, "forged token": forged,
            "provisioning URL": provisioning_url("proxy.test", prov_port, KEY, "pbx", MAC)}
    files = log_files(tmp_path)
    assert p.log_path in files
    assert leaks(used, files) == []


def test_request_log_refusals_keeps_only_refused_lines_and_every_count(proxyd, backend: int) -> None:
    admin, app_port = free_port(), free_port()
    cfg = base_config(applications=[{"name": "crm", "port": app_port, "tls": False,
                                     "upstream": f"http://127.0.0.1:{backend}/"}])
    p = proxyd(cfg, extra_args=("--admin", f"127.0.0.1:{admin}", "--request-log", "refusals"))
    for _ in range(3):
        assert request(app_port, "/api/a").startswith(b"HTTP/1.1 200 ")
    assert request(app_port, "/api/../x").startswith(b"HTTP/1.1 400 ")
    (refused,) = wait_events(p, 1)
    assert refused["status"] == "400" and refused["refusal"] == "non_canonical_path"
    time.sleep(1.2)  # two flushes of the served lines: none were kept
    assert len(events(p.log_path.read_text())) == 1
    assert "event=config_applied" in p.output()  # other info lines stay
    after = samples(scrape(admin))
    assert after[("pforte_http_requests_handled_total", frozenset({
        ("service", "http"), ("route", "application"), ("method", "read"), ("code_class", "2xx")}))] == 3
