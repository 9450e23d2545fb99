"""CertStore: self-signed made once and kept; a new certificate reaches new handshakes only."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from proxyd.tls import CertStore, check_pair, fingerprint, make_self_signed


async def peer_fingerprint(port: int) -> str:
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return fingerprint(ssl.DER_cert_to_PEM_cert(der))


async def test_hot_swap_reaches_new_handshakes_and_keeps_open_ones(tmp_path: Path) -> None:
    store = CertStore(tmp_path)
    first = store.use(None, None, "proxy.test", ["127.0.0.1"])
    assert first.self_signed
    ctx = store.server_context(alpn=["http/1.1"])

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while line := await r.readline():
            w.write(line)
            await w.drain()
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    assert await peer_fingerprint(port) == first.fingerprint

    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)

    cert, key = make_self_signed("official.example", [])
    second = store.use(cert, key, "proxy.test", [])
    assert not second.self_signed and second.fingerprint != first.fingerprint
    assert await peer_fingerprint(port) == second.fingerprint
    writer.write(b"still here\n")  # the connection made before the swap carries on
    assert await reader.readline() == b"still here\n"
    writer.close()
    server.close()
    await server.wait_closed()


def test_self_signed_is_reused_and_renewed_only_for_a_new_fqdn(tmp_path: Path) -> None:
    a = CertStore(tmp_path).use(None, None, "proxy.test", [])
    b = CertStore(tmp_path).use(None, None, "proxy.test", [])
    assert a == b
    c = CertStore(tmp_path).use(None, None, "renamed.test", [])
    assert c.fingerprint != a.fingerprint
    assert check_pair(c.cert_pem, c.key_pem) is None
    assert (tmp_path / "self-signed.key").stat().st_mode & 0o777 == 0o600
