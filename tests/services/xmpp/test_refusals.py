"""What the XMPP listeners refuse, on real sockets: unknown domain, no SNI, garbage, slowloris, oversized."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from services.xmpp import relay
from services.xmpp.stream_header import MAX_PREFIX
from tests.services.xmpp.conftest import Proxy, wait_for

STREAMS = b"xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'"


async def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data`, then read until the proxy closes; what it answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def test_unknown_domain_gets_host_unknown(bare_proxy: Proxy) -> None:
    answer = await exchange(bare_proxy.port, b"<?xml version='1.0'?><stream:stream to='nowhere.test' " + STREAMS + b">")
    assert answer.startswith(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client'")
    assert b"<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>" in answer
    assert answer.endswith(b"</stream:stream>")
    stats = bare_proxy.service.stats()
    assert stats["by_reason"]["unknown_domain"]["refusals"] == 1
    assert stats["counters"]["sessions"] == 0


@pytest.mark.parametrize(("data", "reason"), [
    (b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", "garbage"),
    (b"<!DOCTYPE s [<!ENTITY x 'a.test'>]><stream:stream to='&x;'>", "garbage"),
    (b"<stream:stream to='&x;' " + STREAMS + b">", "bad_entity"),
    (b"<stream:stream " + b"x" * MAX_PREFIX, "oversized"),
])
async def test_garbage_and_oversized_prefix_closed(bare_proxy: Proxy, data: bytes, reason: str) -> None:
    assert await exchange(bare_proxy.port, data) == b""
    assert bare_proxy.service.stats()["by_reason"][reason]["refusals"] == 1


async def test_slowloris_prefix_times_out(bare_proxy: Proxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "PEEK_TIMEOUT", 0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", bare_proxy.port)
    header = b"<stream:stream to='a.test' " + STREAMS + b">"
    closed = False
    for byte in header[:-1]:  # one byte at a time, never finishing the tag
        writer.write(bytes([byte]))
        try:
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        await asyncio.sleep(0.05)
        if reader.at_eof():
            closed = True
            break
    if not closed:
        assert await asyncio.wait_for(reader.read(), 10) == b""
    writer.close()
    assert bare_proxy.service.stats()["by_reason"]["timeout"]["refusals"] == 1


async def _tls_hello(port: int, sni: str | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    writer.write(out.read())
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_direct_tls_without_sni_refused(bare_proxy: Proxy) -> None:
    assert await _tls_hello(bare_proxy.direct_port, None) == b""
    assert await _tls_hello(bare_proxy.direct_port, "nowhere.test") == b""
    stats = bare_proxy.service.stats()["by_reason"]
    assert stats["no_sni"]["refusals"] == 1 and stats["unknown_domain"]["refusals"] == 1


async def test_direct_tls_garbage_refused(bare_proxy: Proxy) -> None:
    assert await exchange(bare_proxy.direct_port, b"<stream:stream to='a.test'>") == b""
    assert bare_proxy.service.stats()["by_reason"]["not_tls"]["refusals"] == 1


async def test_backend_down_is_counted(bare_proxy: Proxy) -> None:
    # routed (known domain) but the instance is not listening
    assert await exchange(bare_proxy.port, b"<stream:stream to='a.test' " + STREAMS + b">") == b""
    await wait_for(lambda: "backend_unreachable" in bare_proxy.service.stats()["by_reason"])


async def test_allow_sources_refuses(bare_proxy: Proxy) -> None:
    await bare_proxy.service.ctx.access.update(("10.99.0.0/16",))
    assert await exchange(bare_proxy.port, b"<stream:stream to='a.test'>") == b""
    assert bare_proxy.service.stats()["by_reason"]["source_not_allowed"]["refusals"] == 1
