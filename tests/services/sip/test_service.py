"""The asyncio service in-process: SDP handed to a running media relay (a small in-test relay,
since the media service is built on another branch), MediaError answered with its status,
media released on BYE, and live reconfiguration of the domain table."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from proxyd.access import AccessList
from proxyd.config import parse_config
from proxyd.service import ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore
from services.media_api import MediaError, Side
from services.sip.message import parse, response
from services.sip.service import SipService
from tests.services.sip.sipp_support import sip_config
from tests.support import base_config


class RecordingMedia:
    """Implements the MediaRelay protocol: rewrites c= lines, refuses Call-IDs starting with 'no'."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, str]] = []
        self.instances: list[str] = []  # the PBX each offer is counted against

    def offer(self, call_id: str, from_tag: str, sdp: bytes, *, side: Side, source_ip: str,
              instance_rtp_only: bool = False, instance: str = "") -> bytes:
        self.ops.append(("offer", call_id))
        self.instances.append(instance)
        if call_id.startswith("no"):
            raise MediaError(488, "Not Acceptable Here")
        if call_id.startswith("bug"):
            raise RuntimeError("a bug in the media relay")
        return sdp.replace(b"c=IN IP4 127.0.0.2", b"c=IN IP4 127.0.0.1")

    def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, *, side: Side,
               source_ip: str) -> bytes:
        self.ops.append(("answer", call_id))
        return sdp

    def delete(self, call_id: str, from_tag: str | None = None) -> None:
        self.ops.append(("delete", call_id))


def _invite(call_id: str, me: str, method: str = "INVITE", cseq: int = 1) -> bytes:
    body = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    if method != "INVITE":
        body = ""
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{method} sip:bob@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}{cseq}\r\n"
            f"From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:bob@pbx.test>\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n{ctype}Content-Length: {len(body)}\r\n\r\n{body}").encode()


async def test_media_offer_error_and_release(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="services.sip")
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    pbx.setblocking(False)
    media = RecordingMedia()
    state = StateDir(tmp_path).ensure()
    ctx = ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList(),
                         lookup=lambda name: media if name == "media" else None)  # type: ignore[arg-type,return-value]
    cfg = parse_config(sip_config("udp", pbx.getsockname()[1]))
    svc = SipService(ctx)
    await svc.start(SipService.view(cfg))
    loop = asyncio.get_running_loop()
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.setblocking(False)
    me = "127.0.0.1:%d" % phone.getsockname()[1]  # noqa: UP031
    port = cfg.services.sip.udp_port
    try:
        phone.sendto(_invite("ok1", me), ("127.0.0.1", port))
        fwd = await asyncio.wait_for(loop.sock_recv(pbx, 65535), 10)
        assert b"c=IN IP4 127.0.0.1" in fwd and b"127.0.0.2\r\nt=" not in fwd
        phone.sendto(_invite("no1", me), ("127.0.0.1", port))
        reply = await asyncio.wait_for(loop.sock_recv(phone, 65535), 10)
        assert reply.startswith(b"SIP/2.0 488 ")
        phone.sendto(_invite("ok1", me, "BYE", 2), ("127.0.0.1", port))
        await asyncio.wait_for(loop.sock_recv(pbx, 65535), 10)
        for _ in range(100):
            if ("delete", "ok1") in media.ops:
                break
            await asyncio.sleep(0.05)
        assert media.ops[:2] == [("offer", "ok1"), ("offer", "no1")] and ("delete", "ok1") in media.ops
        assert media.instances[:2] == ["127.0.0.1:%d" % pbx.getsockname()[1]] * 2  # noqa: UP031
        assert svc.stats()["counters"]["media_errors_488"] == 1
        assert any("reason=media status=488 method=INVITE call_id=no1" in r.getMessage() for r in caplog.records)
        # a media relay that fails with a bug loses that message (logged), and the relay goes on
        phone.sendto(_invite("bug1", me), ("127.0.0.1", port))
        phone.sendto(_invite("ok3", me), ("127.0.0.1", port))
        fwd = await asyncio.wait_for(loop.sock_recv(pbx, 65535), 10)
        assert b"Call-ID: ok3" in fwd and svc.stats()["counters"]["media_step_failed"] == 1
        assert any("reason=media_step_failed call_id=bug1" in r.getMessage() for r in caplog.records)
        # reconfigure without the domain: same socket, now 404
        cfg2 = parse_config(sip_config("udp", pbx.getsockname()[1]) | {"instances": []})
        view2 = SipService.view(cfg2)
        await svc.reconfigure(view2.__class__(**{**view2.__dict__, "udp_port": port}))
        phone.sendto(_invite("ok2", me), ("127.0.0.1", port))
        reply = await asyncio.wait_for(loop.sock_recv(phone, 65535), 10)
        assert reply.startswith(b"SIP/2.0 404 ")
    finally:
        await svc.stop(1)
        phone.close()
        pbx.close()


def test_rate_limit_from_the_config() -> None:
    cfg = base_config(services={"sip": {"mode": "udp", "rate_limit": 0}})
    view = SipService.view(parse_config(cfg))
    assert view is not None and view.rate_limit == 0
    assert SipService.view(parse_config(base_config(services={"sip": {"mode": "udp"}}))).rate_limit == 300  # type: ignore[union-attr]


async def test_flow_tokens_survive_a_restart_with_the_same_state_dir(tmp_path: Path) -> None:
    """A phone registered before a restart (its Path token at the PBX) is still reachable after it."""
    from services.sip.flow import Flow
    from services.sip.service import FLOW_KEY_FILE

    state = StateDir(tmp_path).ensure()
    ctx = ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList())
    cfg = parse_config(sip_config("udp", 5999))
    flow = Flow("p", "udp", "127.0.0.1", 40000)
    tokens = []
    for _ in range(2):
        svc = SipService(ctx)
        await svc.start(SipService.view(cfg))
        try:
            assert svc.relay is not None
            tokens.append(svc.relay.signer.mint(flow))
            assert svc.relay.signer.open(tokens[0]) == flow
        finally:
            await svc.stop(1)
    assert tokens[0] == tokens[1]
    key = state.certs / FLOW_KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    key.write_text("not a key\n")  # a damaged key file is replaced, never fatal
    svc = SipService(ctx)
    await svc.start(SipService.view(cfg))
    try:
        assert svc.relay is not None and svc.relay.signer.open(tokens[0]) is None
    finally:
        await svc.stop(1)
    assert len(bytes.fromhex(key.read_text())) == 64


async def test_phone_connections_that_never_send_a_message_are_closed(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Mode udp takes phones over TCP too: a connection that sent nothing, or only keepalives,
    within FIRST_MESSAGE_TIMEOUT is closed (and logged, once for both); one that sent a SIP
    message stays open."""
    caplog.set_level(logging.INFO, logger="services.sip")
    from services.sip.service import FIRST_MESSAGE_TIMEOUT

    state = StateDir(tmp_path).ensure()
    svc = SipService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    cfg = parse_config(sip_config("udp", 5999))
    view = SipService.view(cfg)
    assert view is not None
    await svc.start(view)
    conns = []
    try:
        for first in (b"", b"\r\n\r\n", b"OPTIONS sip:x@nowhere.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch="
                      b"z9hG4bKs\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@nowhere.test>\r\nCall-ID: s1\r\n"
                      b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", view.udp_port)
            writer.write(first)
            conns.append((reader, writer))
        for reader, _ in conns[1:]:  # the keepalive's pong, the OPTIONS' 404: all three are served
            assert await asyncio.wait_for(reader.read(2), 5)
        assert len(svc.conns) == 3
        svc.close_idle(time.monotonic() + FIRST_MESSAGE_TIMEOUT / 2)
        assert len(svc.conns) == 3
        svc.close_idle(time.monotonic() + FIRST_MESSAGE_TIMEOUT + 1)
        for reader, _ in conns[:2]:
            assert await asyncio.wait_for(reader.read(), 5) in (b"", b"\r\n")  # then EOF
        await asyncio.sleep(0.1)
        assert len(svc.conns) == 1 and svc.stats()["counters"]["silent_connections_closed"] == 2
        logged = [r.getMessage() for r in caplog.records if "reason=silent_connections_closed" in r.getMessage()]
        assert len(logged) == 1 and "src=127.0.0.1:" in logged[0]
    finally:
        for _, writer in conns:
            writer.close()
        await svc.stop(1)


async def test_refused_sources_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A phone outside the access list: its datagrams and connections go nowhere, and the log says so."""
    caplog.set_level(logging.INFO, logger="services.sip")
    state = StateDir(tmp_path).ensure()
    access = AccessList()
    await access.update(("192.0.2.0/24",))
    svc = SipService(ServiceContext(state=state, certs=CertStore(state.certs), access=access))
    view = SipService.view(parse_config(sip_config("udp", 5999)))
    assert view is not None
    await svc.start(view)
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        phone.sendto(_invite("r1", "127.0.0.1:1"), ("127.0.0.1", view.udp_port))
        _, writer = await asyncio.open_connection("127.0.0.1", view.udp_port)
        for _ in range(50):
            if svc.stats()["counters"].get("refused_sources", 0) >= 2:
                break
            await asyncio.sleep(0.02)
        writer.close()
        assert svc.stats()["counters"]["refused_sources"] == 2
        logged = [r.getMessage() for r in caplog.records if "reason=refused_sources" in r.getMessage()]
        assert logged and "src=127.0.0.1:" in logged[0]
    finally:
        phone.close()
        await svc.stop(1)
        await access.close()


async def test_rtp_flows_both_ways_through_a_spiralling_call(tmp_path: Path) -> None:
    """The relay core and the real media relay, phones as RTP sockets: a call between two phones
    of one instance through a PBX (a spiral, see test_proxy) has media of its own on each pass,
    the two passes' PBX-facing sockets linked, and voice reaches each phone from the other."""
    from services.media.sdp import parse as parse_sdp
    from services.media.service import MediaService, MediaView
    from services.sip.proxy import MediaStep
    from tests.services.sip.test_proxy import (
        PBX_FLOW,
        PHONE,
        PHONE_B,
        _answer,
        _invite,
        _pbx_answers,
        _pbx_forwards,
        _register_b,
        _with_sdp,
        make_relay,
    )
    from tests.support import free_udp_range

    state = StateDir(tmp_path).ensure()
    media = MediaService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    base = free_udp_range(24)
    await media.start(MediaView("rtp", base, base + 23, 30.0, "127.0.0.1", None))
    relay = make_relay()

    async def deliver(actions: list) -> tuple[object, bytes]:
        """What reaches the wire for one received message, the media relay's rewrite included."""
        [a] = actions
        if not isinstance(a, MediaStep):
            return a.flow, a.data
        side = Side.PHONE if a.side == "phone" else Side.INSTANCE
        if a.op == "offer":
            a.msg.body = media.offer(a.call_id, a.from_tag, a.msg.body, side=side, source_ip=a.source_ip)
        else:
            a.msg.body = media.answer(a.call_id, a.from_tag, a.to_tag, a.msg.body, side=side,
                                      source_ip=a.source_ip)
            relay.dialogs.answered(a.call_id)
        return a.flow, a.msg.serialize()

    rtp_a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp_b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rtp_a.bind(("127.0.0.2", 0))
        rtp_b.bind(("127.0.0.3", 0))
        for s in (rtp_a, rtp_b):
            s.setblocking(False)
        loop = asyncio.get_running_loop()
        contact_b, path_b = _register_b(relay)
        offer = _with_sdp(_invite(), "127.0.0.2", rtp_a.getsockname()[1])
        _, inv1 = await deliver(relay.receive(offer, PHONE, 1.0))
        spiral = _pbx_forwards(inv1, ruri=contact_b, route=path_b, rr=True)
        to, inv2 = await deliver(relay.receive(spiral, PBX_FLOW, 1.1))
        assert to == PHONE_B
        ok_b = _with_sdp(_answer(inv2, "<sip:127.0.0.9;lr;ftag=1>", "<sip:bob@127.0.0.3:5072>"), "127.0.0.3",
                         rtp_b.getsockname()[1])
        _, ok1 = await deliver(relay.receive(ok_b, PHONE_B, 1.2))
        to, ok2 = await deliver(relay.receive(_pbx_answers(ok1), PBX_FLOW, 1.3))
        assert to == PHONE
        [for_b] = parse_sdp(inv2.partition(b"\r\n\r\n")[2])
        [for_a] = parse_sdp(ok2.partition(b"\r\n\r\n")[2])
        assert for_a.address == for_b.address == "127.0.0.1" and media.stats()["gauges"]["active_streams"] == 2
        assert media.stats()["counters"]["spiral_passes_linked"] == 1
        rtp_a.sendto(b"\x80\x00from-a" + b"x" * 40, (for_a.address, for_a.port))
        assert (await asyncio.wait_for(loop.sock_recv(rtp_b, 2048), 5)).startswith(b"\x80\x00from-a")
        rtp_b.sendto(b"\x80\x00from-b" + b"y" * 40, (for_b.address, for_b.port))
        assert (await asyncio.wait_for(loop.sock_recv(rtp_a, 2048), 5)).startswith(b"\x80\x00from-b")
    finally:
        rtp_a.close()
        rtp_b.close()
        await media.stop(1)


async def test_a_crlf_keepalive_flood_gets_one_pong_and_is_closed(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """main answered 244,402 pongs to 1 MB of CRLF keep-alives and kept the connection open: now
    one pong per KEEPALIVE_INTERVAL (RFC 5626 §4.4.1), and the flood closes the connection, logged."""
    caplog.set_level(logging.INFO, logger="services.sip")
    state = StateDir(tmp_path).ensure()
    svc = SipService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    view = SipService.view(parse_config(sip_config("udp", 5999)))
    assert view is not None
    await svc.start(view)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", view.udp_port)
        writer.write(b"\r\n\r\n")  # a phone's ping: answered
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.write(b"\r\n\r\n" * 262_144)  # 1 MB
        try:  # then EOF or a reset (closed with the flood unread): the connection is closed
            got = await asyncio.wait_for(reader.read(), 10)
        except ConnectionResetError:
            got = b""
        assert len(got) <= 2
        counters = svc.stats()["counters"]
        assert counters["keepalive_floods_closed"] == 1 and counters["keepalives_absorbed"] >= 1
        assert any("reason=keepalive_floods_closed" in r.getMessage() for r in caplog.records)
        writer.close()
    finally:
        await svc.stop(1)


async def test_phone_connections_are_capped_per_address(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond MAX_CONNECTIONS_PER_ADDRESS a phone's new connection is closed at once (logged);
    a place comes back when one of its connections closes."""
    caplog.set_level(logging.INFO, logger="services.sip")
    monkeypatch.setattr("services.sip.service.MAX_CONNECTIONS_PER_ADDRESS", 3)
    state = StateDir(tmp_path).ensure()
    svc = SipService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    view = SipService.view(parse_config(sip_config("udp", 5999)))
    assert view is not None
    await svc.start(view)
    conns = []
    try:
        for _ in range(4):
            conns.append(await asyncio.open_connection("127.0.0.1", view.udp_port))
        try:
            assert await asyncio.wait_for(conns[3][0].read(), 5) == b""  # the fourth: closed
        except ConnectionResetError:
            pass
        assert len(svc.conns) == 3 and svc.stats()["counters"]["connections_refused"] == 1
        assert any("reason=connections_refused src=127.0.0.1:" in r.getMessage() for r in caplog.records)
        conns[0][1].close()
        for _ in range(50):
            if len(svc.conns) == 2:
                break
            await asyncio.sleep(0.02)
        conns.append(await asyncio.open_connection("127.0.0.1", view.udp_port))
        conns[-1][1].write(b"\r\n\r\n")
        assert await asyncio.wait_for(conns[-1][0].readexactly(2), 5) == b"\r\n"  # served
        assert svc.per_address == {"127.0.0.1": 3}
    finally:
        for _, writer in conns:
            writer.close()
        await svc.stop(1)


async def test_a_phone_tls_handshake_has_a_deadline_and_counts_against_the_cap(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A phone that opens TCP to the TLS port and never says ClientHello is closed after
    TLS_HANDSHAKE_TIMEOUT (asyncio's 60 s before); half-open handshakes count against the
    per-address cap from the accept on, so they cannot pile up beyond it."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr("services.sip.service.TLS_HANDSHAKE_TIMEOUT", 0.5)
    monkeypatch.setattr("services.sip.service.MAX_CONNECTIONS_PER_ADDRESS", 2)
    state = StateDir(tmp_path).ensure()
    certs = CertStore(state.certs)
    certs.use(None, None, "proxy.test", ["127.0.0.1"])
    svc = SipService(ServiceContext(state=state, certs=certs, access=AccessList()))
    view = SipService.view(parse_config(sip_config("tls", 5999)))
    assert view is not None
    await svc.start(view)
    conns = []
    try:
        for _ in range(3):
            conns.append(await asyncio.open_connection("127.0.0.1", view.tls_port))
        started = time.monotonic()
        try:
            assert await asyncio.wait_for(conns[2][0].read(), 5) == b""  # the third: closed at once
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 0.4
        assert svc.stats()["counters"]["connections_refused"] == 1 and svc.per_address == {"127.0.0.1": 2}
        for reader, _ in conns[:2]:  # silent handshakes: closed at the deadline
            try:
                assert await asyncio.wait_for(reader.read(), 5) == b""
            except ConnectionResetError:
                pass
        assert time.monotonic() - started < 3
        for _ in range(50):
            if not svc.per_address:
                break
            await asyncio.sleep(0.02)
        assert svc.per_address == {} and svc.phone_connections == 0  # their places came back
        assert any("event=tls_handshake_abandoned service=sip" in r.getMessage() for r in caplog.records)
    finally:
        for _, writer in conns:
            writer.close()
        await svc.stop(1)


async def test_idle_connections_are_closed_on_both_sides(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A phone connection that spoke stays open through FIRST_MESSAGE_TIMEOUT but not past
    IDLE_TIMEOUT without a byte; a PBX's connection to the backend listener goes after
    BACKEND_IDLE_TIMEOUT; both logged."""
    caplog.set_level(logging.INFO, logger="services.sip")
    from services.sip.service import BACKEND_IDLE_TIMEOUT, FIRST_MESSAGE_TIMEOUT, IDLE_TIMEOUT

    state = StateDir(tmp_path).ensure()
    svc = SipService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    view = SipService.view(parse_config(sip_config("udp", 5999)))
    assert view is not None
    await svc.start(view)
    try:
        phone = await asyncio.open_connection("127.0.0.1", view.udp_port)
        phone[1].write(b"\r\n\r\n")
        phone[1].write(b"OPTIONS sip:x@nowhere.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKi\r\n"
                       b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@nowhere.test>\r\nCall-ID: i1\r\nCSeq: 1 OPTIONS\r\n"
                       b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
        assert (await asyncio.wait_for(phone[0].readuntil(b"\r\n\r\n"), 5)).startswith(b"\r\n")
        back_port = svc.back_servers["tcp"].sockets[0].getsockname()[1]
        pbx = await asyncio.open_connection("127.0.0.1", back_port)
        pbx[1].write(b"\r\n\r\n")
        assert await asyncio.wait_for(pbx[0].readexactly(2), 5) == b"\r\n"
        assert len(svc.conns) == 2
        svc.close_idle(time.monotonic() + max(FIRST_MESSAGE_TIMEOUT, BACKEND_IDLE_TIMEOUT) - 1)
        assert len(svc.conns) == 2
        svc.close_idle(time.monotonic() + BACKEND_IDLE_TIMEOUT + 1)
        assert await asyncio.wait_for(pbx[0].read(), 5) == b""
        await asyncio.sleep(0.05)
        assert len(svc.conns) == 1
        svc.close_idle(time.monotonic() + IDLE_TIMEOUT + 1)
        assert await asyncio.wait_for(phone[0].read(), 5) == b""
        await asyncio.sleep(0.05)
        assert len(svc.conns) == 0 and svc.stats()["counters"]["idle_connections_closed"] == 2
        logged = [r.getMessage() for r in caplog.records if "reason=idle_connections_closed" in r.getMessage()]
        assert logged and "side=b peer=127.0.0.1:" in logged[0]
        phone[1].close()
        pbx[1].close()
    finally:
        await svc.stop(1)


async def test_an_oversized_message_over_tcp_is_answered_513_before_the_close(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A REGISTER with 2,000 Contacts (over 64 KiB) vanished without a response before: now its
    header lines get a 513 on the connection, then it is closed (where the next message would
    start is not worth reading to), and the log says why."""
    caplog.set_level(logging.INFO, logger="services.sip")
    state = StateDir(tmp_path).ensure()
    svc = SipService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    view = SipService.view(parse_config(sip_config("udp", 5999)))
    assert view is not None
    await svc.start(view)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", view.udp_port)
        contacts = "".join(f"Contact: <sip:a@10.0.{i >> 8}.{i & 255}:5060>\r\n" for i in range(2_000))
        writer.write((f"REGISTER sip:pbx.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKbig\r\n"
                      f"From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:a@pbx.test>\r\nCall-ID: big1\r\nCSeq: 1 REGISTER\r\n"
                      f"Max-Forwards: 70\r\n{contacts}Content-Length: 0\r\n\r\n").encode())
        try:
            got = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:  # closed with part of the flood unread: the answer may be lost
            pytest.fail("reset before the 513 arrived")
        assert got.startswith(b"SIP/2.0 513 Message Too Large\r\n") and b"Call-ID: big1\r\n" in got
        assert b"branch=z9hG4bKbig" in got
        counters = svc.stats()["counters"]
        assert counters["replied_513"] == 1 and counters["framing_errors"] == 1
        assert any("reason=framing_errors" in r.getMessage() for r in caplog.records)
        writer.close()
    finally:
        await svc.stop(1)


def _ping_udp(src: str, port: int) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(0.5)
        s.sendto(b"\r\n\r\n", ("127.0.0.1", port))
        try:
            return s.recvfrom(100)[0]
        except TimeoutError:
            return b""


async def test_the_backend_side_takes_only_the_instances_addresses(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The backend UDP socket and TCP listener answer the PBX (127.0.0.1 here) and nobody else:
    a datagram or a connection from 127.0.0.2 goes nowhere, logged; a `media_sources` network
    counts as the instance's."""
    caplog.set_level(logging.INFO, logger="services.sip")
    state = StateDir(tmp_path).ensure()
    svc = SipService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    cfg = sip_config("udp", 5999)
    view = SipService.view(parse_config(cfg))
    assert view is not None and view.backend_sources == ("127.0.0.1",)
    await svc.start(view)
    try:
        assert svc.back_udp is not None
        udp_port = svc.back_udp.get_extra_info("sockname")[1]
        tcp_port = svc.back_servers["tcp"].sockets[0].getsockname()[1]
        for src, answered in (("127.0.0.2", False), ("127.0.0.1", True)):
            got = await asyncio.to_thread(_ping_udp, src, udp_port)  # blocking: off the service's loop
            assert got == (b"\r\n" if answered else b"")
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port, local_addr=(src, 0))
            writer.write(b"\r\n\r\n")
            try:
                got = await asyncio.wait_for(reader.read(2), 5)
            except ConnectionResetError:
                got = b""
            assert got == (b"\r\n" if answered else b"")
            writer.close()
        assert svc.stats()["counters"]["backend_foreign_sources"] == 2
        assert any("reason=backend_foreign_sources src=127.0.0.2:" in r.getMessage() for r in caplog.records)
        cfg["instances"][0]["media_sources"] = ["127.0.0.2/32"]
        new = SipService.view(parse_config(cfg))
        assert new is not None
        await svc.reconfigure(new)
        assert svc.backend_source("127.0.0.2") and not svc.backend_source("127.0.0.3")
    finally:
        await svc.stop(1)


async def _closed_at_once(host: str, port: int, src: str) -> bool:
    """Whether a TCP connection from `src` that sends nothing is closed by the server within
    0.3 s (a refusal at accept); a TLS listener that admitted it waits for the ClientHello."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(src, 0))
    try:
        return await asyncio.wait_for(reader.read(1), 0.3) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        writer.close()


async def test_tls_listeners_check_the_source_before_the_handshake(tmp_path: Path) -> None:
    """The phone TLS listener checks the access list, and the backend TLS listener the instances'
    addresses, when the connection is accepted: a refused address is closed before it could send
    a ClientHello, an allowed one waits for it."""
    state = StateDir(tmp_path).ensure()
    certs = CertStore(state.certs)
    certs.use(None, None, "proxy.test", ["127.0.0.1"])
    access = AccessList()
    await access.update(("127.0.0.1/32",))
    svc = SipService(ServiceContext(state=state, certs=certs, access=access))
    view = SipService.view(parse_config(sip_config("tls", 5999, transport="tls")))
    assert view is not None and view.backend_sources == ("127.0.0.1",)
    await svc.start(view)
    try:
        back = svc.back_servers["tls"].sockets[0].getsockname()[1]
        assert await _closed_at_once("127.0.0.1", view.tls_port, "127.0.0.2")
        assert await _closed_at_once("127.0.0.1", back, "127.0.0.2")
        assert not await _closed_at_once("127.0.0.1", view.tls_port, "127.0.0.1")
        assert not await _closed_at_once("127.0.0.1", back, "127.0.0.1")
        counters = svc.stats()["counters"]
        assert counters["refused_sources"] == 1 and counters["backend_foreign_sources"] == 1
        assert "connections_refused" not in counters
        for _ in range(50):  # the refused phone took no place under the caps; the admitted one gives its back
            if not svc.per_address:
                break
            await asyncio.sleep(0.02)
        assert svc.per_address == {}
    finally:
        await svc.stop(1)
        await access.close()


async def test_the_backend_side_binds_to_its_own_address(tmp_path: Path) -> None:
    """`services.sip.backend_bind_address`: the PBX gets the phone's request from that address,
    and our Via names it (the PBX answers there); the phone side stays on the bind address."""
    pbx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pbx.bind(("127.0.0.1", 0))
    pbx.settimeout(5)
    state = StateDir(tmp_path).ensure()
    svc = SipService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    cfg = sip_config("udp", pbx.getsockname()[1])
    cfg["services"]["sip"]["backend_bind_address"] = "127.0.0.3"
    view = SipService.view(parse_config(cfg))
    assert view is not None and view.bind == "127.0.0.1" and view.backend_bind == "127.0.0.3"
    await svc.start(view)
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(5)
    try:
        assert svc.back_udp is not None and svc.back_udp.get_extra_info("sockname")[0] == "127.0.0.3"
        assert {s.sockets[0].getsockname()[0] for s in svc.back_servers.values()} == {"127.0.0.3"}
        me = "127.0.0.1:%d" % phone.getsockname()[1]  # noqa: UP031
        phone.sendto(_invite("bb1", me, "OPTIONS"), ("127.0.0.1", view.udp_port))
        data, src = await asyncio.to_thread(pbx.recvfrom, 65535)
        assert src[0] == "127.0.0.3" and b"Via: SIP/2.0/UDP 127.0.0.3:%d;" % src[1] in data
        pbx.sendto(response(parse(data), 200, "OK", "pbx").serialize(), src)
        got, _ = await asyncio.to_thread(phone.recvfrom, 65535)
        assert got.startswith(b"SIP/2.0 200 OK")
    finally:
        phone.close()
        pbx.close()
        await svc.stop(1)


class _DualPbx(asyncio.DatagramProtocol):
    """A PBX on UDP and TCP at one port: records (transport, request line, top Via), answers 200
    over the transport the request came by."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, str]] = []
        self.udp: asyncio.DatagramTransport | None = None

    def record(self, data: bytes, transport: str) -> bytes:
        req = parse(data)
        self.got.append((transport, data.split(b"\r\n", 1)[0].decode(), req.get("Via") or ""))
        return response(req, 200, "OK", "pbx").serialize()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.udp = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        assert self.udp is not None
        self.udp.sendto(self.record(data, "udp"), addr)

    async def serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"Content-Length: *(\d+)", head)
            body = await reader.readexactly(int(m.group(1)) if m else 0)
            writer.write(self.record(head + body, "tcp"))


async def test_a_request_too_large_for_udp_goes_to_the_pbx_over_tcp(tmp_path: Path) -> None:
    """RFC 3261 §18.1.1: with `sip_offers_tcp`, a phone's INVITE over 1,300 bytes reaches the
    UDP PBX over TCP on the same port (our Via naming our TCP side, so the 200 comes back over
    it and on to the phone over UDP); a small request stays on UDP. Without it, both go UDP."""
    pbx = _DualPbx()
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(lambda: pbx, local_addr=("127.0.0.1", 0))
    pbx_port = udp.get_extra_info("sockname")[1]
    tcp = await asyncio.start_server(pbx.serve_tcp, "127.0.0.1", pbx_port)
    state = StateDir(tmp_path).ensure()
    cfg = sip_config("udp", pbx_port)
    cfg["instances"][0]["sip_offers_tcp"] = True
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.bind(("127.0.0.1", 0))
    phone.settimeout(5)
    me = "127.0.0.1:%d" % phone.getsockname()[1]  # noqa: UP031
    padding = "".join(f"a=x-pad:{n:04d}{'x' * 60}\r\n" for n in range(16)).encode()  # an SDP of ~1.4 KB
    head, body = _invite("big1", me).split(b"\r\n\r\n", 1)
    body += padding
    big = re.sub(rb"Content-Length: \d+", b"Content-Length: %d" % len(body), head) + b"\r\n\r\n" + body
    assert len(big) > 1300
    svc = None
    try:
        for offers_tcp in (True, False):
            cfg["instances"][0]["sip_offers_tcp"] = offers_tcp
            svc = SipService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
            view = SipService.view(parse_config(cfg))
            assert view is not None
            await svc.start(view)
            pbx.got = []
            for data in (_invite("small1", me, "OPTIONS"), big):
                phone.sendto(data, ("127.0.0.1", view.udp_port))
                got, _ = await asyncio.to_thread(phone.recvfrom, 65535)
                assert got.startswith(b"SIP/2.0 200 OK")
            [(t1, line1, _), (t2, line2, via2)] = pbx.got
            assert (t1, line1) == ("udp", "OPTIONS sip:bob@pbx.test SIP/2.0")
            assert line2 == "INVITE sip:bob@pbx.test SIP/2.0"
            assert (t2, via2.startswith("SIP/2.0/TCP ")) == (("tcp", True) if offers_tcp else ("udp", False))
            assert svc.stats()["counters"].get("udp_to_tcp", 0) == (1 if offers_tcp else 0)
            await svc.stop(1)
            svc = None
    finally:
        if svc is not None:
            await svc.stop(1)
        phone.close()
        udp.close()
        tcp.close()
