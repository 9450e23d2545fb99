"""ACME against a real pebble on loopback: issue (RSA, ECDSA), renew, revoke, CA down.

Every issuance here is validated for real over HTTP-01 (pebble fetches the token from the
renewer's own challenge listener); none sets PEBBLE_VA_ALWAYS_VALID.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from proxyd.acme_client import revoke
from proxyd.acme_task import AcmeRenewer, AcmeSpec
from proxyd.tls import CertStore, key_type
from tests.proxyd.pebble import PEBBLE, start_pebble

pytestmark = pytest.mark.skipif(PEBBLE is None, reason="pebble is not installed (.ci/run installs it)")


def spec(pebble, kind="ecdsa-p256"):
    return AcmeSpec(pebble.directory, "ops@example.net", ("localhost",), kind, "127.0.0.1", pebble.http_port,
                    pebble.tls_ca)


async def serve(certs: CertStore) -> tuple[asyncio.Server, int]:
    async def echo(reader, writer):
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read(1)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=certs.server_context(["http/1.1"]))
    return server, server.sockets[0].getsockname()[1]


def peer_cert(port: int, root: Path) -> x509.Certificate:
    ctx = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


@pytest.fixture
def pebble(tmp_path):
    p = start_pebble(tmp_path / "pebble", validity=3600)
    yield p
    p.stop()


@pytest.mark.parametrize("kind", ["ecdsa-p256", "rsa-2048"])
async def test_issue_serves_a_certificate_that_curl_verifies_with_the_pebble_root(tmp_path, pebble, kind):
    certs = CertStore(tmp_path / "certs")
    certs.use(None, None, "localhost", [], kind)  # self-signed until the CA has answered
    renewer = AcmeRenewer(tmp_path / "acme", certs, spec(pebble, kind))
    server, port = await serve(certs)
    root = tmp_path / "root.pem"
    root.write_text(pebble.root_pem())
    started = time.monotonic()
    await renewer.attempt()
    took = time.monotonic() - started
    status = renewer.status()
    assert status["last_error"] is None and "Pebble Intermediate" in status["issuer"], status
    assert took < 15
    assert key_type(certs.current.cert_pem) == kind
    # a phone-like client: curl trusting only pebble's root, no --insecure
    out = await asyncio.to_thread(subprocess.run, [
        "curl", "-sS", "--cacert", str(root), "--resolve", f"localhost:{port}:127.0.0.1",
        f"https://localhost:{port}/"], capture_output=True, timeout=10, text=True)
    assert (out.returncode, out.stdout) == (0, "ok"), out.stderr
    served = await asyncio.to_thread(peer_cert, port, root)
    assert abs(served.not_valid_after_utc.timestamp() - status["not_after"]) < 1
    server.close()


async def test_a_restart_keeps_the_issued_certificate_and_revoke_reaches_the_ca(tmp_path, pebble):
    certs = CertStore(tmp_path / "certs")
    certs.use(None, None, "localhost", [])
    renewer = AcmeRenewer(tmp_path / "acme", certs, spec(pebble))
    await renewer.attempt()
    again = AcmeRenewer(tmp_path / "acme", CertStore(tmp_path / "certs2"), spec(pebble))
    assert again.kept_pair() == (certs.current.cert_pem, certs.current.key_pem)
    assert again.state == renewer.state
    serial = format(x509.load_pem_x509_certificate(certs.current.cert_pem.encode()).serial_number, "x")
    await asyncio.to_thread(revoke, pebble.directory, tmp_path / "acme" / "account.key", None,
                            certs.current.cert_pem, pebble.tls_ca)
    assert json.loads(await asyncio.to_thread(pebble.get, f"/cert-status-by-serial/{serial}"))["Status"] == "Revoked"


async def test_short_lived_certificate_is_renewed_at_two_thirds_and_open_connections_stay(tmp_path):
    p = start_pebble(tmp_path / "pebble", validity=9)
    try:
        certs = CertStore(tmp_path / "certs")
        certs.use(None, None, "localhost", [])
        renewer = AcmeRenewer(tmp_path / "acme", certs, spec(p))
        server, port = await serve(certs)
        root = tmp_path / "root.pem"
        root.write_text(p.root_pem())
        renewer.start()
        deadline = time.monotonic() + 20
        serials: list[int] = []
        held = None
        while time.monotonic() < deadline and len(set(serials)) < 2:
            if certs.current and not certs.current.self_signed:
                serials.append((await asyncio.to_thread(peer_cert, port, root)).serial_number)
                if held is None:  # one connection opened on the first certificate stays open throughout
                    held = await asyncio.open_connection("127.0.0.1", port, ssl=ssl.create_default_context(
                        cafile=str(root)), server_hostname="localhost")
            await asyncio.sleep(0.5)
        await renewer.stop()
        assert len(set(serials)) >= 2, serials  # the first and its renewal (9 s life, renewed after 6 s)
        assert held is not None  # opened before both swaps, it still talks to its handshake's peer
        assert await held[0].readuntil(b"ok") and held[0].at_eof() is False
        held[1].write(b"x")
        await held[1].drain()
        assert await held[0].read() == b""  # the server read our byte and closed: alive until then
        assert renewer.state.failures == 0
        server.close()
    finally:
        p.stop()


async def test_ca_unavailable_keeps_serving_the_current_certificate_and_backs_off(tmp_path):
    p = start_pebble(tmp_path / "pebble", validity=3600)
    certs = CertStore(tmp_path / "certs")
    certs.use(None, None, "localhost", [])
    renewer = AcmeRenewer(tmp_path / "acme", certs, spec(p))
    await renewer.attempt()
    good = certs.current
    p.stop()
    await renewer.attempt()
    status = renewer.status()
    assert certs.current is good
    assert status["failures"] == 1 and "unreachable" in status["last_error"], status
    assert status["retry_at"] - status["last_attempt"] >= 60
    assert status["degraded"] is True  # an hour-long certificate expires within 14 days, renewal failed
    shutil.rmtree(tmp_path / "pebble", ignore_errors=True)


async def test_mode_acme_in_the_config_issues_and_status_and_metrics_say_so(tmp_path, pebble):
    from proxyd.access import AccessList
    from proxyd.config import parse_config
    from proxyd.metrics import registry, render
    from proxyd.service import ServiceContext
    from proxyd.statedir import StateDir
    from proxyd.supervisor import Supervisor
    from tests.support import base_config

    state = StateDir(tmp_path / "state").ensure()
    sup = Supervisor(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()), [])
    cfg = parse_config(base_config(proxy={"fqdn": "localhost"}, bind="127.0.0.1", tls={
        "mode": "acme", "acme_directory": pebble.directory, "acme_email": "ops@example.net",
        "acme_http_port": pebble.http_port, "acme_ca_bundle": pebble.tls_ca, "key_type": "rsa-2048"}))
    await sup.apply(cfg)
    assert sup.ctx.certs.current.self_signed  # served at once, until the CA has answered
    for _ in range(75):  # 15 s at most
        if not sup.ctx.certs.current.self_signed:
            break
        await asyncio.sleep(0.2)
    st = sup.status()
    assert not sup.ctx.certs.current.self_signed, st["acme"]
    assert "Pebble Intermediate" in st["certificates"][0]["issuer"] and st["degraded"] == []
    assert st["acme"]["not_after"] == st["certificates"][0]["not_after"]
    text = render(registry(lambda: st)).decode()
    assert 'pforte_acme_consecutive_failures{name="localhost"} 0.0' in text
    assert 'pforte_acme_degraded{name="localhost"} 0.0' in text
    assert 'pforte_acme_renewer{process="single"} 1.0' in text and st["acme"]["process"] == "single"
    stamp = float(text.split('pforte_acme_last_attempt_timestamp_seconds{name="localhost"} ')[1].split()[0])
    assert abs(stamp - st["acme"]["last_attempt"]) < 1
    await sup.apply(cfg)  # a re-apply keeps the issued certificate
    assert not sup.ctx.certs.current.self_signed
    await sup.shutdown()


def browser_like(port: int, ctx: ssl.SSLContext) -> tuple[x509.Certificate, str | None]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)), tls.selected_alpn_protocol()


@pytest.mark.parametrize("kind", ["ecdsa-p256", "rsa-2048"])
async def test_tls_alpn_01_on_the_https_router_issues_while_clients_keep_being_served(tmp_path, kind, caplog):
    """Pebble's VA connects to the router's HTTPS port (its tlsPort) with ALPN acme-tls/1 and
    checks the challenge certificate; a browser-like client during and after the order gets the
    proxy's own certificate; curl then verifies the issued one with pebble's root."""
    from proxyd.access import AccessList
    from proxyd.config import parse_config
    from proxyd.service import ServiceContext
    from proxyd.statedir import StateDir
    from proxyd.supervisor import Supervisor
    from services.http.service import HttpService
    from tests.support import base_config, free_port

    caplog.set_level(logging.INFO, logger="proxyd.tls")
    port = free_port()
    p = start_pebble(tmp_path / "pebble", tls_port=port)
    state = StateDir(tmp_path / "state").ensure()
    sup = Supervisor(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()), [HttpService])
    try:
        await sup.apply(parse_config(base_config(
            proxy={"fqdn": "localhost"}, bind="127.0.0.1", services={"web": {"mode": "rest_only", "port": port}},
            tls={"mode": "acme", "acme_directory": p.directory, "acme_challenge": "tls-alpn-01",
                 "acme_ca_bundle": p.tls_ca, "key_type": kind})))
        plain = ssl.create_default_context()
        plain.check_hostname, plain.verify_mode = False, ssl.CERT_NONE
        plain.set_alpn_protocols(["h2", "http/1.1"])
        started, seen = time.monotonic(), set()
        while sup.ctx.certs.current.self_signed and time.monotonic() - started < 20:
            # an ordinary client while the order runs: the proxy's certificate, never the challenge one
            cert, alpn = await asyncio.to_thread(browser_like, port, plain)
            assert alpn == "http/1.1"
            assert not any(e.oid.dotted_string == "1.3.6.1.5.5.7.1.31" for e in cert.extensions)
            seen.add(cert.serial_number)
            await asyncio.sleep(0.05)
        took = time.monotonic() - started
        assert len(seen) == 1  # every ordinary handshake during the order got the one self-signed cert
        status = sup.status()
        assert not sup.ctx.certs.current.self_signed, (status["acme"], (tmp_path / "pebble" / "pebble.log").read_text())
        assert status["acme"]["last_error"] is None and key_type(sup.ctx.certs.current.cert_pem) == kind
        assert not sup.ctx.certs.alpn_challenges  # released after the order
        # pebble's VA came to the router's port with acme-tls/1 and got the challenge certificate
        assert "event=acme_tls_alpn_validation service=http name=localhost" in caplog.text
        root = tmp_path / "root.pem"
        root.write_text(p.root_pem())
        out = await asyncio.to_thread(subprocess.run, [
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(root),
            "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/"],
            capture_output=True, timeout=10, text=True)
        assert out.returncode == 0, out.stderr  # the router answers (a refusal status is fine): TLS verified
        print(f"tls-alpn-01 {kind}: issued {took:.1f} s after the apply; {len(seen)} self-signed serial(s) meanwhile")
    finally:
        await sup.shutdown()
        p.stop()


async def test_http_01_through_a_plain_http_listener_of_the_router(tmp_path, caplog):
    """An application without TLS owns the HTTP-01 port: the renewer binds nothing, pebble's VA
    fetches the token from the router's listener, whose other requests are routed as before."""
    from proxyd.access import AccessList
    from proxyd.config import parse_config
    from proxyd.service import ServiceContext
    from proxyd.statedir import StateDir
    from proxyd.supervisor import Supervisor
    from services.http.service import HttpService
    from tests.support import base_config

    p = start_pebble(tmp_path / "pebble")
    state = StateDir(tmp_path / "state").ensure()
    sup = Supervisor(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()), [HttpService])
    app = {"name": "legacy", "port": p.http_port, "tls": False, "public_prefix": "/api/",
           "upstream": "http://127.0.0.1:9/api/"}
    try:
        cfg = parse_config(base_config(
            proxy={"fqdn": "localhost"}, bind="127.0.0.1", applications=[app],
            tls={"mode": "acme", "acme_directory": p.directory, "acme_http_port": p.http_port,
                 "acme_ca_bundle": p.tls_ca}))
        await sup.apply(cfg)
        assert sup.acme is not None and sup.acme.spec.own_http_listener is False
        for _ in range(100):
            if not sup.ctx.certs.current.self_signed:
                break
            await asyncio.sleep(0.2)
        st = sup.status()
        assert not sup.ctx.certs.current.self_signed, (st["acme"], (tmp_path / "pebble" / "pebble.log").read_text())
        assert "Pebble Intermediate" in st["acme"]["issuer"] and not sup.ctx.acme_tokens  # released
        # the router still routes: an unknown challenge token and other paths get its usual answers
        reader, writer = await asyncio.open_connection("127.0.0.1", p.http_port)
        writer.write(b"GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await writer.drain()
        status = (await reader.readline()).split()[1]
        writer.close()
        assert status == b"404", status
    finally:
        await sup.shutdown()
        p.stop()
