"""A CA's rate limit (RFC 8555 §6.6: `urn:ietf:params:acme:error:rateLimited` with Retry-After) is
respected: the renewer asks again no sooner than Retry-After, also after a restart, keeps serving
the certificate it has, logs the refusal and reports Degraded.

The CA here is a STAND-IN, not pebble: pebble has no rate limits and cannot be made to answer
rateLimited. The stand-in speaks just enough ACME over loopback HTTP (directory, nonces) to refuse
the first signed request the way Let's Encrypt does, and counts the requests it gets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from proxyd.acme_task import AcmeRenewer, AcmeSpec
from proxyd.tls import CertStore

RETRY_AFTER = 7200  # longer than any backoff the renewer would pick by itself (60 s doubling, jittered)


class RateLimitingCA(BaseHTTPRequestHandler):
    posts: list[str] = []

    def log_message(self, *args: object) -> None:
        pass

    def _nonce(self) -> None:
        self.send_header("Replay-Nonce", secrets.token_urlsafe(16))

    def do_HEAD(self) -> None:  # newNonce
        self.send_response(200)
        self._nonce()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        base = f"http://{self.headers['Host']}"
        body = json.dumps({"newNonce": f"{base}/nonce", "newAccount": f"{base}/new-account",
                           "newOrder": f"{base}/new-order", "revokeCert": f"{base}/revoke",
                           "keyChange": f"{base}/key-change"}).encode()
        self.send_response(200)
        self._nonce()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        type(self).posts.append(self.path)
        body = json.dumps({"type": "urn:ietf:params:acme:error:rateLimited", "status": 429,
                           "detail": "too many new registrations from this address"}).encode()
        self.send_response(429)
        self._nonce()
        self.send_header("Retry-After", str(RETRY_AFTER))
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def ca():
    RateLimitingCA.posts = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), RateLimitingCA)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/directory"
    server.shutdown()
    server.server_close()


async def test_rate_limited_renewal_waits_for_retry_after_keeps_serving_and_is_degraded(tmp_path, ca, caplog):
    certs = CertStore(tmp_path / "certs")
    certs.use(None, None, "localhost", [])
    serving = certs.current
    spec = AcmeSpec(ca, "ops@example.net", ("localhost",), "ecdsa-p256", "127.0.0.1", 0)
    renewer = AcmeRenewer(tmp_path / "acme", certs, spec)
    caplog.set_level(logging.WARNING, "proxyd.acme")
    before = time.time()
    renewer.start()  # the loop itself: no certificate yet, so it asks at once
    for _ in range(100):
        if renewer.status()["failures"]:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # time for a second request, would the loop ignore the CA's word
    await renewer.stop()
    status = renewer.status()
    assert RateLimitingCA.posts == ["/new-account"], RateLimitingCA.posts
    assert "rateLimited" in status["last_error"] and "too many new registrations" in status["last_error"], status
    assert status["retry_at"] >= before + RETRY_AFTER, status
    assert status["degraded"] is True
    assert certs.current is serving  # nothing replaced what is served
    line = next(r.getMessage() for r in caplog.records if "event=acme_failed" in r.getMessage())
    assert "rateLimited" in line and f"retry_in={RETRY_AFTER}" in line, line

    # a restart remembers the CA's Retry-After: the new renewer does not ask before it
    again = AcmeRenewer(tmp_path / "acme", certs, spec)
    again.start()
    await asyncio.sleep(1.0)
    await again.stop()
    assert RateLimitingCA.posts == ["/new-account"], RateLimitingCA.posts
    assert again.status()["retry_at"] == status["retry_at"] and again.status()["degraded"] is True
