"""TLS listeners: a finished handshake reaches the service, a failed one is logged with its reason."""

from __future__ import annotations

import asyncio
import logging
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxyd.tls import CertStore
from proxyd.tls_accept import create_tls_server


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport
        # what the services read from the transport: the peer and the TLS session
        assert transport.get_extra_info("peername")[0] == "127.0.0.1"
        assert transport.get_extra_info("ssl_object") is not None

    def data_received(self, data: bytes) -> None:
        self.t.write(data)  # type: ignore[attr-defined]


@pytest.fixture
async def port(tmp_path: Path) -> AsyncIterator[int]:
    store = CertStore(tmp_path)
    store.use(None, None, "proxy.test", [], key_type="rsa-2048")
    server = await create_tls_server(Echo, "127.0.0.1", 0, store.server_context(), service="provisioning")
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def client(*, lo: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2, hi: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3,
           ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if ciphers:
        ctx.set_ciphers(ciphers)
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point of the test
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = lo, hi
    return ctx


async def logged(caplog: pytest.LogCaptureFixture, needle: str) -> logging.LogRecord:
    """The first record containing needle (the server side logs a moment after the client fails)."""
    for _ in range(200):
        found = [r for r in caplog.records if needle in r.getMessage()]
        if found:
            caplog.clear()
            return found[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {needle!r} in {[r.getMessage() for r in caplog.records]}")


async def failed(port: int, ctx: ssl.SSLContext, caplog: pytest.LogCaptureFixture) -> str:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    record = await logged(caplog, "event=tls_handshake_failed")
    assert record.levelno == logging.WARNING
    return record.getMessage()


async def test_a_good_handshake_reaches_the_service(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client(hi=ssl.TLSVersion.TLSv1_2))
    assert writer.get_extra_info("ssl_object").cipher()[0].startswith("ECDHE-RSA-")
    writer.write(b"hello\n")
    assert await reader.readline() == b"hello\n"
    writer.close()


async def test_refused_handshakes_are_logged_with_the_reason(port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "proxyd.tls")
    old = client(lo=ssl.TLSVersion.TLSv1, hi=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT@SECLEVEL=0")
    line = await failed(port, old, caplog)
    assert "event=tls_handshake_failed service=provisioning client=127.0.0.1 reason=unsupported_protocol" in line
    assert "below 1.2" in line
    static_rsa = client(hi=ssl.TLSVersion.TLSv1_2, ciphers="AES128-GCM-SHA256:AES256-SHA")
    line = await failed(port, static_rsa, caplog)
    assert "reason=no_shared_cipher" in line

    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # plain HTTP to the TLS port
    writer.write(b"GET /p/x HTTP/1.1\r\nHost: proxy.test\r\n\r\n")
    assert await reader.read() == b""
    writer.close()
    assert "plain HTTP sent to a TLS port" in (await logged(caplog, "reason=http_request")).getMessage()


async def test_a_client_that_leaves_before_the_handshake_is_noted(port: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "proxyd.tls")
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    record = await logged(caplog, "event=tls_handshake_abandoned")
    assert record.levelno == logging.INFO and "client=127.0.0.1" in record.getMessage()


def real_hello(name: str, alpn: list[str]) -> bytes:
    from tests.proxyd.test_tls_hello import real_hello as make

    return make(name, alpn)


def _alpn_case(tmp_path: Path):
    import hashlib
    import socket

    from cryptography import x509

    from proxyd.acme_client import ACME_IDENTIFIER, alpn_challenge_pair
    from services.http.limits import Budget, ConnectionGate

    async def main() -> None:
        store = CertStore(tmp_path)
        store.use(None, None, "proxy.test", [])
        gate = ConnectionGate(per_address=8, budget=Budget(100), service="test")
        server = await create_tls_server(Echo, "127.0.0.1", 0, store.server_context(["http/1.1"]), service="web",
                                         gate=gate, alpn_challenges=store.alpn_challenges, handshake_timeout=0.5)
        port = server.sockets[0].getsockname()[1]

        def hello(name: str, alpn: list[str]) -> tuple[x509.Certificate, str | None, bytes]:
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            ctx.set_alpn_protocols(alpn)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=name) as tls:
                der = tls.getpeercert(binary_form=True)
                chosen = tls.selected_alpn_protocol()
                echoed = b""
                if chosen != "acme-tls/1":
                    tls.sendall(b"ping")
                    echoed = tls.recv(4)
            return x509.load_der_x509_certificate(der), chosen, echoed

        own = store.current.fingerprint
        digest = hashlib.sha256(b"token.thumbprint").digest()
        store.add_alpn_challenge("proxy.test", *alpn_challenge_pair("proxy.test", digest))
        try:
            cert, chosen, _ = await asyncio.to_thread(hello, "proxy.test", ["acme-tls/1"])
            ext = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
            assert ext.critical and ext.value.value == b"\x04\x20" + digest
            assert chosen == "acme-tls/1"  # ALPN follows the challenge context
            for name, alpn in [("proxy.test", ["http/1.1"]), ("proxy.test", ["h2", "http/1.1"]),
                               ("other.test", ["acme-tls/1"])]:
                cert, chosen, echoed = await asyncio.to_thread(hello, name, alpn)
                with pytest.raises(x509.ExtensionNotFound):
                    cert.extensions.get_extension_for_oid(ACME_IDENTIFIER)
                assert echoed == b"ping" and chosen in ("http/1.1", None), (name, alpn, chosen)
            # while the hello is read a connection is counted, and released on every way out
            for _ in range(40):  # the clients above closed; the server hears of it a loop turn later
                if gate.budget.open == 0:
                    break
                await asyncio.sleep(0.05)
            assert gate.budget.open == 0
            idle = socket.create_connection(("127.0.0.1", port))  # says nothing: the timeout ends it
            half = socket.create_connection(("127.0.0.1", port))  # half a hello, then leaves
            half.sendall(real_hello("proxy.test", ["acme-tls/1"])[:40])
            junk = socket.create_connection(("127.0.0.1", port))  # not TLS: OpenSSL refuses it
            junk.sendall(b"GET / HTTP/1.1\r\n\r\n")
            await asyncio.sleep(0.2)
            assert gate.by_address["127.0.0.1"] >= 2
            half.close()
            for _ in range(100):  # the idle one ends at the 0.5 s handshake timeout
                if gate.budget.open == 0:
                    break
                await asyncio.sleep(0.05)
            assert gate.budget.open == 0 and not gate.by_address, gate.by_address
            assert idle.recv(1) == b"" and junk.recv(100) == b""
            idle.close()
            junk.close()
        finally:
            store.drop_alpn_challenge("proxy.test")
        cert, chosen, echoed = await asyncio.to_thread(hello, "proxy.test", ["acme-tls/1"])
        assert echoed == b"ping" and chosen is None  # no order: no challenge, no acme-tls/1
        from cryptography.hazmat.primitives import serialization

        from proxyd.tls import fingerprint
        assert fingerprint(cert.public_bytes(serialization.Encoding.PEM).decode()) == own
        server.close()
        await server.wait_closed()

    return main


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tls_alpn_01_hellos_get_the_challenge_certificate_and_others_the_proxys(tmp_path: Path, loop: str) -> None:
    import uvloop

    new = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}[loop]
    with asyncio.Runner(loop_factory=new) as runner:
        runner.run(_alpn_case(tmp_path)())
