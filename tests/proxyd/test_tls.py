"""CertStore: self-signed made once and kept; a new certificate reaches new handshakes only."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from proxyd.tls import CertStore, check_pair, fingerprint, key_type, make_self_signed


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


async def handshake(port: int, *, tls12: bool = False) -> tuple[str, str, str]:
    """-> (certificate fingerprint, protocol, cipher) as a client sees them."""
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    if tls12:
        client.maximum_version = ssl.TLSVersion.TLSv1_2
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
    obj = writer.get_extra_info("ssl_object")
    fp = fingerprint(ssl.DER_cert_to_PEM_cert(obj.getpeercert(binary_form=True)))
    name, proto, _ = obj.cipher()
    writer.close()
    return fp, proto, name


async def test_a_key_type_change_reaches_every_new_handshake(tmp_path: Path) -> None:
    # OpenSSL keeps one certificate per key type in a context: had the RSA pair been loaded into
    # the listener's context, ECDSA-capable clients would still be shown the old ECDSA one.
    store = CertStore(tmp_path)
    first = store.use(None, None, "proxy.test", ["127.0.0.1"])
    assert key_type(first.cert_pem) == "ecdsa-p256"
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=store.server_context())
    port = server.sockets[0].getsockname()[1]
    assert (await handshake(port))[0] == first.fingerprint

    rsa_pair = store.use(None, None, "proxy.test", ["127.0.0.1"], key_type="rsa-2048")
    assert key_type(rsa_pair.cert_pem) == "rsa-2048" and rsa_pair.fingerprint != first.fingerprint
    assert (await handshake(port)) == (rsa_pair.fingerprint, "TLSv1.3", "TLS_AES_256_GCM_SHA384")
    fp, proto, cipher = await handshake(port, tls12=True)
    assert (fp, proto) == (rsa_pair.fingerprint, "TLSv1.2") and cipher.startswith("ECDHE-RSA-") and "GCM" in cipher

    back = store.use(None, None, "proxy.test", ["127.0.0.1"])  # and back: a new P-256 one
    assert key_type(back.cert_pem) == "ecdsa-p256" and back.fingerprint != first.fingerprint
    fp, proto, cipher = await handshake(port, tls12=True)
    assert (fp, proto) == (back.fingerprint, "TLSv1.2") and cipher.startswith("ECDHE-ECDSA-")
    server.close()
    await server.wait_closed()


def test_self_signed_is_renewed_for_a_new_key_type_only(tmp_path: Path) -> None:
    a = CertStore(tmp_path).use(None, None, "proxy.test", [], key_type="rsa-3072")
    assert key_type(a.cert_pem) == "rsa-3072"
    assert CertStore(tmp_path).use(None, None, "proxy.test", [], key_type="rsa-3072") == a
    b = CertStore(tmp_path).use(None, None, "proxy.test", [], key_type="rsa-2048")
    assert key_type(b.cert_pem) == "rsa-2048" and check_pair(b.cert_pem, b.key_pem) is None


def test_tls_below_1_2_and_non_aead_suites_are_refused(tmp_path: Path) -> None:
    store = CertStore(tmp_path)
    store.use(None, None, "proxy.test", [], key_type="rsa-2048")
    ctx = store.server_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all(n.startswith(("ECDHE-RSA-", "ECDHE-ECDSA-")) for n in tls12)
    assert all("GCM" in n or "CHACHA20" in n for n in tls12)
