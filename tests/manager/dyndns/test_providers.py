"""DDNS providers against real peers: BIND 9 (named) for RFC 2136 + TSIG, and a local stand-in for
Cloudflare's v4 API (the public API cannot be reached from here; the stand-in implements the
documented endpoints the provider uses: list zones, list/create/update/delete DNS records)."""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

from manager.dyndns.providers import Cloudflare, DdnsError, Rfc2136, update_with_retries
from tests.support import free_tcp_udp_port, require_peer, stop_process

ZONE = "example.test"
NAME = "proxy.example.test"


class Bind:
    def __init__(self, port: int, key_name: str, secret: str):
        self.port, self.key_name, self.secret = port, key_name, secret

    def query(self, name: str, rdtype: str, timeout: float = 5) -> list[str]:
        q = dns.message.make_query(name, rdtype)
        resp = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=timeout)
        return sorted(r.to_text() for rrset in resp.answer for r in rrset)


def named_answers(b: Bind, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> bool:
    """True once named answers from its zone, False if it exited. Tries are short: a query sent
    before named listens is lost without a word (an unconnected UDP socket gets no ICMP error),
    and a 5 s try would cost 5 s at every start and leave only a few tries under load."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            if b.query(f"ns.{ZONE}", "A", timeout=0.5) == ["127.0.0.1"]:
                return True
        except (dns.exception.DNSException, OSError):
            pass
        if time.monotonic() > deadline:
            stop_process(proc)
            raise AssertionError(f"named did not answer in {timeout} s:\n" + log.read_text()[-3000:])
        time.sleep(0.05)
    return False


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Bind]:
    yield from run_bind(tmp_path, f"grant pforte-ddns name {NAME}. A AAAA;")


def run_bind(tmp_path: Path, grants: str) -> Iterator[Bind]:
    """named with ZONE, updatable by the key `pforte-ddns` as `grants` (update-policy rules) allow."""
    named = require_peer("named")
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    (tmp_path / f"{ZONE}.zone").write_text(
        "$TTL 300\n@ SOA ns.example.test. admin.example.test. 1 3600 600 86400 60\n"
        "@ NS ns.example.test.\nns A 127.0.0.1\nother A 127.0.0.9\n"
    )
    conf, log = tmp_path / "named.conf", tmp_path / "named.log"
    for attempt in range(3):
        # named listens on UDP and TCP and exits if either is taken; another process may still
        # take the port between our check and named's bind, then a new port is tried
        port = free_tcp_udp_port()
        conf.write_text(f"""
options {{
  directory "{tmp_path}"; pid-file "{tmp_path}/named.pid"; session-keyfile "{tmp_path}/session.key";
  listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }};
  recursion no; dnssec-validation no; allow-query {{ 127.0.0.1; }}; notify no;
}};
controls {{ }};
key "pforte-ddns" {{ algorithm hmac-sha256; secret "{secret}"; }};
zone "{ZONE}" {{ type primary; file "{tmp_path}/{ZONE}.zone";
  update-policy {{ {grants} }}; }};
""")
        with open(log, "ab") as out:
            proc = subprocess.Popen([named, "-g", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=out)
        b = Bind(port, "pforte-ddns", secret)
        if named_answers(b, proc, log):
            break
        if attempt == 2 or "unable to listen on any configured interfaces" not in log.read_text():
            raise AssertionError(f"named exited with {proc.returncode}:\n" + log.read_text()[-3000:])
    yield b
    stop_process(proc)


def test_rfc2136_update_is_visible_in_a_real_query(bind: Bind) -> None:
    p = Rfc2136("127.0.0.1", ZONE, bind.key_name, bind.secret, port=bind.port)
    assert p.update(NAME, "127.0.0.2") == f"{NAME} A 127.0.0.2 (RFC 2136 at 127.0.0.1)"
    assert bind.query(NAME, "A") == ["127.0.0.2"]
    p.update(NAME, "127.0.0.3")  # replaces, does not add
    assert bind.query(NAME, "A") == ["127.0.0.3"]
    p.update(NAME, "::1")
    assert bind.query(NAME, "AAAA") == ["::1"] and bind.query(NAME, "A") == ["127.0.0.3"]
    assert bind.query(f"other.{ZONE}", "A") == ["127.0.0.9"]  # nothing else touched


def test_rfc2136_wrong_key_and_foreign_name_are_refused(bind: Bind) -> None:
    wrong = Rfc2136("127.0.0.1", ZONE, bind.key_name, base64.b64encode(b"x" * 32).decode(), port=bind.port)
    with pytest.raises(DdnsError) as info:
        wrong.update(NAME, "127.0.0.2")
    assert bind.secret not in str(info.value)
    good = Rfc2136("127.0.0.1", ZONE, bind.key_name, bind.secret, port=bind.port)
    with pytest.raises(DdnsError, match="REFUSED"):
        good.update(f"other.{ZONE}", "127.0.0.2")  # the server's policy allows exactly one name
    with pytest.raises(DdnsError, match="not inside zone"):
        good.update("proxy.elsewhere.test", "127.0.0.2")
    assert bind.query(NAME, "A") == []


class CloudflareStandIn(BaseHTTPRequestHandler):
    token = ""
    zones = {"zone1": ZONE}
    records: dict[str, dict[str, Any]] = {}
    fail_next = 0
    # called with (record, present) when a TXT record is added or deleted: Cloudflare's own nameservers
    # would serve it; a DNS-01 test points this at a real BIND that pebble resolves through
    publish: Callable[[dict[str, Any], bool], None] | None = None

    def _reply(self, code: int, result: Any, errors: list | None = None) -> None:
        body = json.dumps({"success": code < 400, "errors": errors or [], "result": result}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str) -> None:
        cls = type(self)
        if self.headers.get("Authorization") != f"Bearer {cls.token}":
            return self._reply(403, None, [{"code": 9109, "message": "Invalid access token"}])
        if cls.fail_next:
            cls.fail_next -= 1
            return self._reply(500, None, [{"code": 1000, "message": "internal error"}])
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if method == "GET" and url.path == "/client/v4/zones":
            return self._reply(200, [{"id": k, "name": v} for k, v in cls.zones.items() if v == q.get("name")])
        m = re.fullmatch(r"/client/v4/zones/(\w+)/dns_records(?:/(\w+))?", url.path)
        if not m or m.group(1) not in cls.zones:
            return self._reply(404, None, [{"code": 7003, "message": "not found"}])
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        if method == "GET":
            return self._reply(200, [r for r in cls.records.values()
                                     if r["type"] == q.get("type") and r["name"] == q.get("name")])
        if method == "GET" and "content" in q:
            return self._reply(200, [r for r in cls.records.values() if r["type"] == q.get("type")
                                     and r["name"] == q.get("name") and r["content"] == q["content"]])
        if method == "POST":
            rid = secrets.token_hex(4)
            cls.records[rid] = {**body, "id": rid}
            if body["type"] == "TXT" and cls.publish:
                cls.publish(cls.records[rid], True)
            return self._reply(200, cls.records[rid])
        if method == "DELETE" and m.group(2) in cls.records:
            gone = cls.records.pop(m.group(2))
            if gone["type"] == "TXT" and cls.publish:
                cls.publish(gone, False)
            return self._reply(200, {"id": gone["id"]})
        if method == "PUT" and m.group(2) in cls.records:
            cls.records[m.group(2)] = {**body, "id": m.group(2)}
            return self._reply(200, cls.records[m.group(2)])
        return self._reply(405, None, [{"code": 1, "message": "method"}])

    def do_GET(self) -> None:  # noqa: N802
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._route("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._route("DELETE")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cloudflare() -> Iterator[str]:
    CloudflareStandIn.token = secrets.token_urlsafe(16)
    CloudflareStandIn.records = {"r0": {"id": "r0", "type": "A", "name": f"other.{ZONE}", "content": "127.0.0.9"}}
    CloudflareStandIn.fail_next = 0
    CloudflareStandIn.publish = None
    server = ThreadingHTTPServer(("127.0.0.1", 0), CloudflareStandIn)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/client/v4"
    server.shutdown()
    server.server_close()


def test_cloudflare_creates_then_updates_only_its_record(cloudflare: str) -> None:
    p = Cloudflare(ZONE, CloudflareStandIn.token, api=cloudflare)
    assert p.update(NAME, "127.0.0.2").endswith("(created at Cloudflare)")
    assert p.update(NAME, "127.0.0.3").endswith("(updated at Cloudflare)")
    mine = [r for r in CloudflareStandIn.records.values() if r["name"] == NAME]
    assert [(r["type"], r["content"]) for r in mine] == [("A", "127.0.0.3")]
    assert CloudflareStandIn.records["r0"]["content"] == "127.0.0.9"
    assert CloudflareStandIn.token not in repr(p)


def test_cloudflare_bad_token_and_retries(cloudflare: str) -> None:
    with pytest.raises(DdnsError, match="Invalid access token"):
        Cloudflare(ZONE, "wrong", api=cloudflare).update(NAME, "127.0.0.2")
    CloudflareStandIn.fail_next = 2
    slept: list[float] = []
    p = Cloudflare(ZONE, CloudflareStandIn.token, api=cloudflare)
    assert "created" in update_with_retries(p, NAME, "127.0.0.2", attempts=3, sleep=slept.append)
    assert slept == [1.0, 2.0]
    CloudflareStandIn.fail_next = 5
    with pytest.raises(DdnsError, match="internal error"):
        update_with_retries(p, NAME, "127.0.0.4", attempts=2, sleep=slept.append)
