"""Real slixmpp clients log in to two real prosody servers through pforte; TLS stays end to end."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl

import pytest
from slixmpp import ClientXMPP

from services.xmpp.stream_header import Header, peek_stream_header
from tests.services.xmpp.conftest import Backends, Proxy, wait_for
from tests.services.xmpp.prosody import PASSWORD
from tests.support import free_port

pytestmark = pytest.mark.peer
BODY = "hello-through-pforte-7d1e"


def client_ctx(backends: Backends) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(backends.ca.path))
    return ctx


async def login(
    jid: str, port: int, backends: Backends, *, direct: bool = False,
) -> tuple[ClientXMPP, asyncio.Queue[str]]:
    client = ClientXMPP(jid, PASSWORD)
    client.ssl_context = client_ctx(backends)
    client.enable_direct_tls, client.enable_starttls, client.enable_plaintext = direct, not direct, False
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    inbox: asyncio.Queue[str] = asyncio.Queue()

    def on_start(_: object) -> None:
        client.send_presence()
        if not started.done():
            started.set_result(None)

    def on_fail(_: object) -> None:
        if not started.done():
            started.set_exception(AssertionError(f"{jid}: authentication failed"))

    client.add_event_handler("session_start", on_start)
    client.add_event_handler("failed_auth", on_fail)
    client.add_event_handler("message", lambda msg: inbox.put_nowait(str(msg["body"])))
    client.connect("127.0.0.1", port)
    await asyncio.wait_for(started, 30)
    return client, inbox


async def logout(*clients: ClientXMPP) -> None:
    for c in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(c.disconnect(), 10)


async def chat(sender: ClientXMPP, receiver: ClientXMPP, inbox: asyncio.Queue[str], body: str) -> None:
    sender.send_message(mto=receiver.boundjid.full, mbody=body, mtype="chat")
    assert await asyncio.wait_for(inbox.get(), 20) == body


def assert_never_clear_after_proceed(chunks: dict[str, list[bytes]]) -> None:
    """Client->backend: stream header (the peek buffer), <starttls/>, then only TLS records;
    backend->client: features, <proceed/>, then only TLS records."""
    up = b"".join(chunks["client_to_backend"])
    down = b"".join(chunks["backend_to_client"])
    m_up = re.search(rb"<starttls[^>]*/>", up)
    m_down = re.search(rb"<proceed[^>]*/>", down)
    assert m_up and m_down, (up[:300], down[:500])
    # the only thing the proxy buffered before relaying is the prefix with the stream header
    buffered = chunks["client_to_backend"][0]
    header = peek_stream_header(buffered)
    assert isinstance(header, Header) and header.end == len(buffered), buffered  # exactly the stream tag
    for tail in (up[m_up.end():], down[m_down.end():]):
        assert tail[:1] == b"\x16" and tail[1:2] == b"\x03", tail[:20]  # a TLS handshake record
        assert b"<message" not in tail and b"<auth" not in tail and b"<iq" not in tail
    everything = up + down
    assert BODY.encode() not in everything
    assert PASSWORD.encode() not in everything


async def test_starttls_login_and_chat_on_two_instances(proxy: Proxy, backends: Backends) -> None:
    alice, _ = await login("alice@a.test", proxy.port, backends)
    bob, bob_inbox = await login("bob@a.test", proxy.port, backends)
    carol, _ = await login("carol@b.test", proxy.port, backends)
    dave, dave_inbox = await login("dave@b.test", proxy.port, backends)
    try:
        assert {c.boundjid.domain for c in (alice, bob)} == {"a.test"}
        assert {c.boundjid.domain for c in (carol, dave)} == {"b.test"}
        await chat(alice, bob, bob_inbox, BODY)
        await chat(carol, dave, dave_inbox, BODY + "-b")
        stats = proxy.service.stats()
        assert stats["by_instance"] == {"inst-a": {"active_sessions": 2}, "inst-b": {"active_sessions": 2}}
        assert stats["counters"]["bytes_client_to_backend"] > 0 and stats["counters"]["bytes_backend_to_client"] > 0
    finally:
        await logout(alice, bob, carol, dave)
    assert len(proxy.seen) == 4
    for chunks in proxy.seen.values():
        assert_never_clear_after_proceed(chunks)
    await wait_for(lambda: sum(proxy.service.active.values()) == 0)


async def _direct_tls(port: int, backends: Backends, sni: str) -> tuple[str, bytes]:
    """Handshake with whoever pforte routes `sni` to; the certificate name and the stream reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx(backends), server_hostname=sni)
    try:
        cert = writer.get_extra_info("peercert")
        writer.write(f"<?xml version='1.0'?><stream:stream to='{sni}' xmlns='jabber:client' "
                     "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>".encode())
        data = b""
        while b"</stream:features>" not in data:
            chunk = await asyncio.wait_for(reader.read(4096), 20)
            assert chunk, data
            data += chunk
        return dict(x[0] for x in cert["subject"])["commonName"], data
    finally:
        writer.close()


async def test_direct_tls_routed_by_sni(proxy: Proxy, backends: Backends) -> None:
    for domain in ("a.test", "b.test"):
        cn, reply = await _direct_tls(proxy.direct_port, backends, domain)
        assert cn == domain
        assert f"from='{domain}'".encode() in reply or f'from="{domain}"'.encode() in reply
    for s in proxy.seen.values():  # the proxy saw only ciphertext after the ClientHello
        assert b"<stream:stream" not in b"".join(s["client_to_backend"])


async def test_direct_tls_slixmpp_login(proxy: Proxy, backends: Backends) -> None:
    carol, _ = await login("carol@b.test", proxy.direct_port, backends, direct=True)
    try:
        assert carol.boundjid.domain == "b.test"
        assert proxy.service.stats()["by_instance"]["inst-b"]["active_sessions"] == 1
    finally:
        await logout(carol)


async def test_no_sni_goes_to_default_instance(proxy: Proxy, backends: Backends) -> None:
    cfg = proxy.cfg
    cfg["instances"][1]["xmpp_default"] = True
    await proxy.apply(cfg)
    ctx = client_ctx(backends)
    ctx.check_hostname = False  # no SNI sent; still verify the chain and check the name below
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.direct_port, ssl=ctx, server_hostname=None)
    cert = writer.get_extra_info("peercert")
    writer.close()
    assert dict(x[0] for x in cert["subject"])["commonName"] == "b.test"


async def test_reconfigure_swaps_routes_and_keeps_sessions(proxy: Proxy, backends: Backends) -> None:
    alice, _ = await login("alice@a.test", proxy.port, backends)
    bob, bob_inbox = await login("bob@a.test", proxy.port, backends)
    try:
        cfg = proxy.cfg
        cfg["instances"][0]["xmpp_domains"] = ["other.test"]  # a.test no longer routed
        await proxy.apply(cfg)
        await chat(alice, bob, bob_inbox, "still-here")  # established sessions untouched
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"<stream:stream to='a.test' xmlns='jabber:client' "
                     b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
        assert b"host-unknown" in await asyncio.wait_for(reader.read(), 10)
        writer.close()
    finally:
        await logout(alice, bob)


async def test_stop_ends_sessions_cleanly(proxy: Proxy, backends: Backends) -> None:
    alice, _ = await login("alice@a.test", proxy.port, backends)
    gone = asyncio.get_running_loop().create_future()
    alice.add_event_handler("disconnected", lambda _: gone.done() or gone.set_result(None))
    await proxy.service.stop(2.0)
    await asyncio.wait_for(gone, 10)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    await logout(alice)


async def test_direct_tls_client_hello_in_small_tcp_segments(proxy: Proxy, backends: Backends) -> None:
    """A ClientHello dribbled in 50-byte TCP segments still routes; the handshake completes end to end."""
    ctx = client_ctx(backends)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="b.test")
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.direct_port)
    try:
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        for i in range(0, len(hello), 50):
            writer.write(hello[i:i + 50])
            await writer.drain()
            await asyncio.sleep(0.01)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if pending := outgoing.read():
                    writer.write(pending)
                chunk = await asyncio.wait_for(reader.read(65536), 20)
                assert chunk, "proxy closed during the handshake"
                incoming.write(chunk)
        cert = tls.getpeercert()
        assert cert is not None and dict(x[0] for x in cert["subject"])["commonName"] == "b.test"
    finally:
        writer.close()


async def test_reconfigure_new_ports_keeps_old_sessions(proxy: Proxy, backends: Backends) -> None:
    alice, _ = await login("alice@a.test", proxy.port, backends)
    bob, bob_inbox = await login("bob@a.test", proxy.port, backends)
    old_port = proxy.port
    try:
        cfg = proxy.cfg
        cfg["services"]["xmpp"]["port"] = free_port()
        await proxy.apply(cfg)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", old_port)
        await chat(alice, bob, bob_inbox, "moved-ports")  # relayed sessions survived the rebind
        carol, _ = await login("carol@b.test", proxy.port, backends)
        await logout(carol)
    finally:
        await logout(alice, bob)
