"""Media relay: allocator, SDP rewrite, latching, and real RTP over loopback through MediaService."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import time
from pathlib import Path

import pytest

from proxyd.access import AccessList
from proxyd.config import parse_config
from proxyd.service import ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore
from services.media import sdp as sdplib
from services.media.ports import PortPool
from services.media.relay import Endpoint
from services.media.service import MediaService, MediaView
from services.media.session import UNANSWERED_FOR
from services.media_api import MediaError, Side
from tests.support import base_config, free_udp_range


def offer_sdp(ip: str, port: int, proto: str = "RTP/AVP", crypto: bool = False, mux: bool = False) -> bytes:
    lines = ["v=0", f"o=- 1 1 IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0", f"m=audio {port} {proto} 0 8 101",
             "a=rtpmap:101 telephone-event/8000", "a=ptime:20", "a=sendrecv"]
    if crypto:
        lines.append("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VuZA")
    if mux:
        lines.append("a=rtcp-mux")
    return ("\r\n".join(lines) + "\r\n").encode()


def rtp(payload: bytes, ssrc: bytes = b"SSRC", pt: int = 0, seq: int = 1) -> bytes:
    """An RTP packet (version 2, `pt`, `seq`, timestamp 0, `ssrc`) carrying `payload`."""
    return bytes([0x80, pt]) + seq.to_bytes(2, "big") + b"\0\0\0\0" + ssrc + payload


def test_pool_takes_all_or_nothing_gives_back_and_blocks() -> None:
    pool = PortPool(40000, 40009)
    assert pool.capacity == pool.available == 5
    got = pool.take(3)
    assert got == [40000, 40002, 40004] and pool.used == set(got)
    assert pool.take(3) is None and pool.available == 2  # all or nothing: nothing taken
    pool.give(40002)
    pool.give(40002)  # idempotent
    assert pool.take(1) == [40002]  # the pair given back last is taken first (the adapter's spares)
    pool.block(40004, until=10.0)
    assert 40004 not in pool.used and pool.available == 2
    pool.unblock(9.0)
    assert pool.available == 2
    pool.unblock(10.0)
    assert pool.available == 3
    pool.resize(40000, 40005)  # in use outside the new range: forgotten when given back
    pool.give(40000)
    pool.give(40002)
    assert pool.used == set() and pool.available == 3 and pool.take(4) is None
    for _ in range(1000):  # churn
        taken = pool.take(2)
        assert taken is not None and len(set(taken)) == 2
        for p in taken:
            pool.give(p)
    assert pool.available == 3


def test_sdp_rewrite_changes_only_addresses_and_ports() -> None:
    original = offer_sdp("127.0.0.5", 4000, "RTP/SAVP", crypto=True)
    out = sdplib.rewrite(original, "127.0.0.9", [(40002, 40003)])
    keep = [ln for ln in original.decode().splitlines() if ln[0] not in "com"]
    assert [ln for ln in out.decode().splitlines() if ln[0] not in "com"] == keep
    assert "c=IN IP4 127.0.0.9" in out.decode() and "m=audio 40002 RTP/SAVP 0 8 101" in out.decode()
    media = sdplib.parse(original)
    assert media[0].crypto and media[0].proto == "RTP/SAVP" and media[0].address == "127.0.0.5"
    with pytest.raises(sdplib.SdpError):
        sdplib.parse(b"v=0\r\nm=audio x RTP/AVP 0\r\n")


def test_latching_rules() -> None:
    ep = Endpoint(40000)
    ep.expected_ip, ep.remote, ep.pts = "127.0.0.5", ("127.0.0.5", 4000), frozenset({0, 8})
    assert ep.latchable(rtp(b"x"), ("127.0.0.6", 4000)) == "source_address"  # a third party cannot hijack
    assert ep.latchable(b"not rtp at all", ("127.0.0.5", 5555)) == "not_rtp_of_session"
    assert ep.latchable(rtp(b"x", pt=96), ("127.0.0.5", 5555)) == "not_rtp_of_session"  # not in the SDP
    assert ep.latchable(rtp(b"x"), ("127.0.0.5", 5555)) == ""
    ep.latch(("127.0.0.5", 5555), rtp(b"x"))
    assert ep.remote == ep.src == ("127.0.0.5", 5555) and ep.ssrc == b"SSRC"
    assert ep.latchable(rtp(b"x"), ("127.0.0.5", 6666)) == "latched_source_active"
    ep.packets = 1
    ep.check(10.0)
    ep.check(11.9)
    assert ep.latchable(rtp(b"x"), ("127.0.0.5", 6666)) == "latched_source_active"  # 1.9 s of silence
    ep.check(12.0)  # NAT rebinding: silent for RELATCH_SILENCE, then a packet of the same SSRC from a new port
    assert ep.latchable(rtp(b"x", ssrc=b"EVIL"), ("127.0.0.5", 6666)) == "not_rtp_of_session"
    assert ep.latchable(rtp(b"x"), ("127.0.0.5", 6666)) == ""
    rtcp = Endpoint(40001)
    rtcp.expected_ip, rtcp.rtcp, rtcp.rtp = "127.0.0.5", True, ep
    rr = bytes([0x81, 201, 0, 7]) + b"SSRC" + bytes(24)
    assert rtcp.latchable(rr, ("127.0.0.5", 5556)) == ""
    assert rtcp.latchable(rr.replace(b"SSRC", b"EVIL"), ("127.0.0.5", 5556)) == "not_rtp_of_session"
    assert rtcp.latchable(bytes([0x81, 202, 0, 1]) + b"SSRC", ("127.0.0.5", 5556)) == "not_rtp_of_session"


@pytest.fixture
async def media(tmp_path: Path):
    state = StateDir(tmp_path).ensure()
    svc = MediaService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    base = free_udp_range(24)
    await svc.start(MediaView("rtp", base, base + 23, 2.0, "127.0.0.1", None))
    yield svc
    await svc.stop(1)


class Peer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait((data, addr))


async def udp(ip: str) -> tuple[asyncio.DatagramTransport, Peer, int]:
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(Peer, local_addr=(ip, 0))
    return t, p, t.get_extra_info("sockname")[1]


def port_of(sdp: bytes) -> int:
    return sdplib.parse(sdp)[0].port


async def test_rtp_flows_both_ways_third_party_dropped_rebinding_relatched(media: MediaService) -> None:
    phone_t, phone, phone_port = await udp("127.0.0.2")
    pbx_t, pbx, pbx_port = await udp("127.0.0.3")
    to_pbx = media.offer("c1", "f", offer_sdp("127.0.0.2", phone_port), side=Side.PHONE, source_ip="127.0.0.2")
    to_phone = media.answer("c1", "f", "t", offer_sdp("127.0.0.3", pbx_port), side=Side.INSTANCE,
                                  source_ip="127.0.0.3")
    relay_for_pbx, relay_for_phone = port_of(to_pbx), port_of(to_phone)
    assert relay_for_pbx != relay_for_phone and b"c=IN IP4 127.0.0.1" in to_pbx

    phone_t.sendto(rtp(b"voice-from-phone" + b"x" * 150), ("127.0.0.1", relay_for_phone))
    data, src = await asyncio.wait_for(pbx.got.get(), 5)
    assert data.startswith(rtp(b"voice-from-phone")) and src == ("127.0.0.1", relay_for_pbx)
    pbx_t.sendto(rtp(b"voice-from-pbx"), ("127.0.0.1", relay_for_pbx))
    data, _ = await asyncio.wait_for(phone.got.get(), 5)
    assert data == rtp(b"voice-from-pbx")

    evil_t, evil, _ = await udp("127.0.0.4")
    evil_t.sendto(rtp(b"hijack"), ("127.0.0.1", relay_for_phone))
    await asyncio.sleep(0.2)
    assert pbx.got.empty()
    assert media.stats()["counters"]["drops"] >= 1

    # the phone's NAT rebinds: same IP, new port -> re-latched once the old port has been silent
    # for RELATCH_SILENCE, answers go to the new port
    phone2_t, phone2, _ = await udp("127.0.0.2")
    phone2_t.sendto(rtp(b"too-early"), ("127.0.0.1", relay_for_phone))
    await asyncio.sleep(0.2)
    assert pbx.got.empty()  # the latched source is active: the stream does not move
    t = time.monotonic()
    media.expire_idle(t)
    media.expire_idle(t + 2.0)
    phone2_t.sendto(rtp(b"after-rebind"), ("127.0.0.1", relay_for_phone))
    assert (await asyncio.wait_for(pbx.got.get(), 5))[0] == rtp(b"after-rebind")
    pbx_t.sendto(rtp(b"to-new-port"), ("127.0.0.1", relay_for_pbx))
    assert (await asyncio.wait_for(phone2.got.get(), 5))[0] == rtp(b"to-new-port")
    assert media.stats()["gauges"]["active_streams"] == 1

    media.delete("c1")
    assert media.stats()["gauges"]["ports_in_use"] == 0
    for t in (phone_t, pbx_t, evil_t, phone2_t):
        t.close()


async def test_idle_timeout_releases_ports(media: MediaService) -> None:
    media.offer("idle", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    media.answer("idle", "f", "t", offer_sdp("127.0.0.9", 5000), side=Side.INSTANCE, source_ip="127.0.0.9")
    assert media.stats()["gauges"]["ports_in_use"] == 4
    for _ in range(60):
        await asyncio.sleep(0.1)
        if not media.calls:
            break
    assert not media.calls and media.stats()["counters"]["idle_released"] == 1


async def test_idle_rule_with_an_injected_clock(media: MediaService) -> None:
    phone_t, _, phone_port = await udp("127.0.0.2")
    media.offer("c", "f", offer_sdp("127.0.0.2", phone_port), side=Side.PHONE, source_ip="127.0.0.2")
    t0 = media.calls["c"].since  # idle_timeout is 2 s
    media.core.calls["c"].answered = t0  # the set-up timeout (20 s) stays out of the way
    media.expire_idle(t0 + 1.5)
    assert "c" in media.calls
    relay_for_phone = media.legs("c")[0].phone_port
    phone_t.sendto(rtp(b"x"), ("127.0.0.1", relay_for_phone))  # a packet (dropped: no instance yet) is life
    for _ in range(50):
        await asyncio.sleep(0.02)
        if media.legs("c")[0].received():
            break
    media.expire_idle(t0 + 3.0)
    assert "c" in media.calls  # the packet restarted the idle time at t0 + 3
    media.expire_idle(t0 + 4.5)
    assert "c" in media.calls
    media.expire_idle(t0 + 5.5)
    assert "c" not in media.calls and media.stats()["counters"]["idle_released"] == 1
    phone_t.close()


async def test_an_unanswered_call_rings_past_the_idle_timeout_until_timer_c_and_a_late_answer_is_refused(
        media: MediaService) -> None:
    """A phone may ring for minutes without early media: the idle timeout (2 s here) runs from
    the answer; before it the call keeps its ports for UNANSWERED_FOR (Timer C). An answer whose
    call's media is gone is refused (503), never passed on with the peer's own addresses."""
    media.offer("ring", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    t0 = media.calls["ring"].since
    media.expire_idle(t0 + 60)
    assert "ring" in media.calls
    media.expire_idle(t0 + UNANSWERED_FOR + 1)
    assert "ring" not in media.calls and media.stats()["gauges"]["ports_in_use"] == 0
    with pytest.raises(MediaError) as info:
        media.answer("ring", "f", "t", offer_sdp("10.0.0.9", 5000), side=Side.INSTANCE, source_ip="10.0.0.9")
    assert (info.value.status, info.value.retry_after) == (503, 10)
    assert media.stats()["counters"]["answers_without_call"] == 1


async def test_exhaustion_is_503_and_srtp_mode_requires_srtp(media: MediaService) -> None:
    held = []
    with pytest.raises(MediaError) as info:
        for i in range(100):
            media.offer(f"x{i}", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
            held.append(i)
    assert info.value.status == 503 and len(held) == 6  # 24 ports = 12 pairs; a call takes a pair per side
    assert media.stats()["counters"]["ports_exhausted"] == 1
    await media.reconfigure(MediaView("srtp", media.v.port_min, media.v.port_max, 2.0, "127.0.0.1", None))
    for i in held:
        media.delete(f"x{i}")
    with pytest.raises(MediaError) as info:
        media.offer("plain", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    assert info.value.status == 488
    sdp = media.offer("sec", "f", offer_sdp("127.0.0.2", 4000, "RTP/SAVP", crypto=True), side=Side.PHONE,
                            source_ip="127.0.0.2")
    assert b"a=crypto:1 AES_CM_128_HMAC_SHA1_80" in sdp  # keys pass end to end, untouched


def test_a_busy_port_in_the_range_is_skipped(tmp_path: Path) -> None:
    base = free_udp_range(8)
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.1", base + 1))

    async def go() -> int:
        state = StateDir(tmp_path).ensure()
        svc = MediaService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
        await svc.start(MediaView("rtp", base, base + 7, 60, "127.0.0.1", None))
        sdp = svc.offer("c", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
        await svc.stop(1)
        return port_of(sdp)

    try:
        assert asyncio.run(go()) != base
    finally:
        blocker.close()


def test_pool_shrink_keeps_ports_in_use_and_takes_only_from_the_new_range() -> None:
    a = PortPool(40000, 40019)
    held = a.take(2)
    assert held == [40000, 40002]
    a.resize(40010, 40015)
    assert a.used == {40000, 40002}  # established calls keep their ports
    assert sorted(a.take(3) or ()) == [40010, 40012, 40014]
    assert a.take(1) is None
    a.give(40000)  # the call ends: its port is gone for good, never reused outside the range
    assert a.take(1) is None and a.used == {40002, 40010, 40012, 40014}


async def test_reconfigure_shrinking_the_range_keeps_established_calls(media: MediaService) -> None:
    base = media.v.port_min
    phone_t, phone, phone_port = await udp("127.0.0.2")
    pbx_t, pbx, pbx_port = await udp("127.0.0.3")
    to_pbx = media.offer("old", "f", offer_sdp("127.0.0.2", phone_port), side=Side.PHONE, source_ip="127.0.0.2")
    to_phone = media.answer("old", "f", "t", offer_sdp("127.0.0.3", pbx_port), side=Side.INSTANCE,
                                  source_ip="127.0.0.3")
    old_ports = {port_of(to_pbx), port_of(to_phone)}
    assert old_ports == {base, base + 2}

    await media.reconfigure(MediaView("rtp", base + 12, base + 15, 2.0, "127.0.0.1", None))
    # the established call still relays both ways on its old ports
    phone_t.sendto(rtp(b"still-here"), ("127.0.0.1", port_of(to_phone)))
    assert (await asyncio.wait_for(pbx.got.get(), 5))[0] == rtp(b"still-here")
    pbx_t.sendto(rtp(b"and-back"), ("127.0.0.1", port_of(to_pbx)))
    assert (await asyncio.wait_for(phone.got.get(), 5))[0] == rtp(b"and-back")
    gauges = media.stats()["gauges"]
    assert gauges["ports_in_use"] == 4 and gauges["ports_available"] == 4  # the new range is all free

    new = media.offer("new", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    assert base + 12 <= port_of(new) <= base + 15
    with pytest.raises(MediaError) as info:  # 4 ports = one call's worth
        media.offer("full", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    assert info.value.status == 503
    media.delete("old")
    assert media.stats()["gauges"] == {"active_calls": 1, "active_streams": 1, "ports_in_use": 4,
                                       "ports_available": 0, "ports_blocked": 0}
    with pytest.raises(MediaError):  # the old call's ports are outside the range now: never handed out again
        media.offer("full", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    for t in (phone_t, pbx_t):
        t.close()


def test_an_unreachable_sdp_address_drops_and_counts(tmp_path: Path) -> None:
    """On uvloop (what proxyd runs) sendto raises for an address of the other family: counted as
    unsent, never an exception per packet (::1 is a configured instance host, so it may be sent to)."""
    uvloop = pytest.importorskip("uvloop")
    base = free_udp_range(8)

    async def go() -> int:
        state = StateDir(tmp_path).ensure()
        svc = MediaService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
        await svc.start(MediaView("rtp", base, base + 7, 60, "127.0.0.1", None, instance_hosts=frozenset({"::1"})))
        phone_t, _, phone_port = await udp("127.0.0.2")
        svc.offer("v6", "f", offer_sdp("127.0.0.2", phone_port), side=Side.PHONE, source_ip="127.0.0.2")
        v6 = offer_sdp("127.0.0.3", 4000).replace(b"IN IP4 127.0.0.3", b"IN IP6 ::1")
        to_phone = svc.answer("v6", "f", "t", v6, side=Side.INSTANCE, source_ip="127.0.0.3")
        for _ in range(3):
            phone_t.sendto(rtp(b"voice"), ("127.0.0.1", port_of(to_phone)))
        for _ in range(50):
            await asyncio.sleep(0.02)
            if svc.stats()["counters"].get("unsent", 0) >= 3:
                break
        drops = int(svc.stats()["counters"].get("unsent", 0))
        phone_t.close()
        await svc.stop(1)
        return drops

    assert uvloop.run(go()) == 3


async def test_ports_of_an_ended_call_serve_the_next_call_with_nothing_carried_over(media: MediaService) -> None:
    old_phone_t, _, old_phone_port = await udp("127.0.0.2")
    media.offer("a", "f", offer_sdp("127.0.0.2", old_phone_port), side=Side.PHONE, source_ip="127.0.0.2")
    to_old_phone = media.answer("a", "f", "t", offer_sdp("127.0.0.3", 4000), side=Side.INSTANCE,
                                      source_ip="127.0.0.3")
    old_phone_t.sendto(rtp(b"latch"), ("127.0.0.1", port_of(to_old_phone)))
    await asyncio.sleep(0.1)
    media.delete("a")
    assert media.stats()["gauges"]["ports_in_use"] == 0

    phone_t, phone, phone_port = await udp("127.0.0.5")
    pbx_t, pbx, pbx_port = await udp("127.0.0.6")
    to_pbx = media.offer("b", "f", offer_sdp("127.0.0.5", phone_port), side=Side.PHONE, source_ip="127.0.0.5")
    to_phone = media.answer("b", "f", "t", offer_sdp("127.0.0.6", pbx_port), side=Side.INSTANCE,
                                  source_ip="127.0.0.6")
    assert port_of(to_phone) == port_of(to_old_phone)  # the same sockets, still bound
    assert media.stats()["gauges"]["ports_in_use"] == 4
    old_phone_t.sendto(rtp(b"stale"), ("127.0.0.1", port_of(to_phone)))  # the old phone's latch is gone
    phone_t.sendto(rtp(b"new-call"), ("127.0.0.1", port_of(to_phone)))
    assert (await asyncio.wait_for(pbx.got.get(), 5))[0] == rtp(b"new-call")
    pbx_t.sendto(rtp(b"back"), ("127.0.0.1", port_of(to_pbx)))
    assert (await asyncio.wait_for(phone.got.get(), 5))[0] == rtp(b"back")
    await asyncio.sleep(0.1)
    assert pbx.got.empty()
    leg = media.legs("b")[0]
    assert leg.phone.drops == 1 and leg.phone.packets == 1  # counters start afresh
    for t in (old_phone_t, phone_t, pbx_t):
        t.close()


def test_sdp_ice_is_removed_and_m_lines_are_limited_while_reading() -> None:
    body = offer_sdp("127.0.0.5", 4000).replace(b"a=sendrecv\r\n", (
        b"a=sendrecv\r\na=ice-ufrag:F7gI\r\na=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\na=ice-options:trickle\r\n"
        b"a=candidate:1 1 UDP 2130706431 192.0.2.66 4000 typ host\r\n"
        b"a=candidate:2 1 UDP 1694498815 10.9.9.9 4000 typ srflx raddr 0.0.0.0 rport 9\r\n"
        b"a=remote-candidates:1 192.0.2.66 4000\r\na=end-of-candidates\r\n"))
    out = sdplib.rewrite(body, "127.0.0.9", [(40002, 40003)]).decode()
    assert "candidate" not in out and "ice-" not in out and "192.0.2.66" not in out and "10.9.9.9" not in out
    assert "a=sendrecv" in out and "a=rtpmap:101 telephone-event/8000" in out
    assert sdplib.parse(body)[0].pts == {0, 8, 101}
    many = b"v=0\r\nc=IN IP4 127.0.0.5\r\n" + b"m=audio 4000 RTP/AVP 0\r\n" * 9
    assert len(sdplib.parse(many, 9)) == 9
    with pytest.raises(sdplib.SdpError, match="more than 8 m= lines"):
        sdplib.parse(many, 8)


async def test_an_unusable_answer_gives_the_ports_back(media: MediaService) -> None:
    media.offer("u", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    assert media.stats()["gauges"]["ports_in_use"] == 4
    with pytest.raises(MediaError) as info:
        media.answer("u", "f", "t", b"v=0\r\nm=audio x RTP/AVP 0\r\n", side=Side.INSTANCE,
                           source_ip="127.0.0.3")
    assert info.value.status == 488 and "u" not in media.calls
    assert media.stats()["gauges"]["ports_in_use"] == 0


async def test_limits_per_sdp_and_per_source_refuse_before_taking_ports(media: MediaService) -> None:
    await media.reconfigure(dataclasses.replace(media.v, max_streams=2, max_streams_per_source=3))
    media.offer("m3", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    with pytest.raises(MediaError) as info:  # a re-offer with 3 m= lines: refused, the call keeps its stream
        media.offer("m3", "f", b"v=0\r\nc=IN IP4 127.0.0.2\r\n" + b"m=audio 4000 RTP/AVP 0\r\n" * 3,
                          side=Side.PHONE, source_ip="127.0.0.2")
    assert info.value.status == 488 and info.value.retry_after is None
    media.offer("two", "f", b"v=0\r\nc=IN IP4 127.0.0.2\r\n" + b"m=audio 4000 RTP/AVP 0\r\n" * 2,
                      side=Side.PHONE, source_ip="127.0.0.2")
    with pytest.raises(MediaError) as info:  # 1 + 2 + 1 streams > 3
        media.offer("one", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    assert info.value.status == 503 and info.value.retry_after == 10
    assert media.stats()["counters"]["refused_source_limit"] == 1
    media.offer("other", "f", offer_sdp("127.0.0.7", 4000), side=Side.PHONE, source_ip="127.0.0.7")
    media.offer("pbx", "f", offer_sdp("127.0.0.3", 4000), side=Side.INSTANCE, source_ip="127.0.0.3")
    assert media.core.by_source == {"127.0.0.2": 3, "127.0.0.7": 1}  # an instance's offer counts against no phone
    media.delete("m3")
    media.offer("one", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")


async def test_limit_per_instance_refuses_with_retry_after_and_leaves_other_instances_room(
        media: MediaService) -> None:
    await media.reconfigure(dataclasses.replace(media.v, max_streams_per_instance=2))
    two = b"v=0\r\nc=IN IP4 127.0.0.2\r\n" + b"m=audio 4000 RTP/AVP 0\r\n" * 2
    media.offer("a", "f", two, side=Side.PHONE, source_ip="127.0.0.2", instance="10.0.0.1:5060")
    free = media.stats()["gauges"]["ports_available"]
    with pytest.raises(MediaError) as info:  # from another phone, to the same PBX
        media.offer("b", "f", offer_sdp("127.0.0.4", 4000), side=Side.PHONE, source_ip="127.0.0.4",
                    instance="10.0.0.1:5060")
    assert (info.value.status, info.value.retry_after) == (503, 10) and "b" not in media.calls
    assert media.stats()["gauges"]["ports_available"] == free  # refused before a port was taken
    assert media.stats()["counters"]["refused_instance_limit"] == 1
    # the PBX's own offer (a call to a phone) counts against it too; another PBX has room
    with pytest.raises(MediaError):
        media.offer("c", "f", offer_sdp("127.0.0.3", 4000), side=Side.INSTANCE, source_ip="127.0.0.3",
                    instance="10.0.0.1:5060")
    media.offer("d", "f", offer_sdp("127.0.0.4", 4000), side=Side.PHONE, source_ip="127.0.0.4",
                instance="10.0.0.2:5060")
    assert media.core.by_instance == {"10.0.0.1:5060": 2, "10.0.0.2:5060": 1}
    media.delete("a")
    media.offer("b", "f", offer_sdp("127.0.0.4", 4000), side=Side.PHONE, source_ip="127.0.0.4",
                instance="10.0.0.1:5060")
    assert media.core.by_instance == {"10.0.0.1:5060": 1, "10.0.0.2:5060": 1}


async def test_a_port_held_by_another_process_is_skipped_and_the_offer_succeeds(media: MediaService) -> None:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", media.v.port_min + 1))  # the RTCP port of the first pair the pool hands out
    try:
        out = media.offer("a", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
        assert port_of(out) != media.v.port_min
        gauges = media.stats()["gauges"]
        assert gauges["ports_blocked"] == 2 and gauges["ports_in_use"] == 4
        assert gauges["ports_available"] == 24 - 4 - 2
        assert media.stats()["counters"]["ports_unbindable"] == 1
    finally:
        squatter.close()
    media.delete("a")
    media.expire_idle(time.monotonic() + 61)  # the blocked pair gets another try after BLOCKED_FOR
    assert media.stats()["gauges"]["ports_available"] == 24


@pytest.mark.parametrize(("address", "sent"), [("127.0.0.2", True), ("127.0.0.1", False), ("0.0.0.0", False),
                                                ("224.0.0.1", False), ("255.255.255.255", False),
                                                ("169.254.1.1", False), ("192.0.2.66", False),
                                                ("phone.example", False)])
async def test_before_a_latch_only_the_signalling_address_is_sent_to(media: MediaService, address: str,
                                                                     sent: bool) -> None:
    body = offer_sdp("127.0.0.2", 4000).replace(b"c=IN IP4 127.0.0.2", f"c=IN IP4 {address}".encode())
    media.offer("c", "f", body, side=Side.PHONE, source_ip="127.0.0.2")
    legs = media.legs("c")
    assert (legs[0].phone.remote, legs[1].phone.remote) == ((("127.0.0.2", 4000), ("127.0.0.2", 4001)) if sent
                                                            else (None, None))
    assert legs[0].phone.expected_ip == "127.0.0.2"  # and only from there is a latch taken


async def test_an_sdp_pointing_at_the_relays_own_ports_is_never_sent_to(media: MediaService) -> None:
    own = media.v.port_min + 10
    media.offer("c", "f", offer_sdp("127.0.0.1", own), side=Side.PHONE, source_ip="127.0.0.1")
    assert media.legs("c")[0].phone.remote is None
    media.answer("c", "f", "t", offer_sdp("127.0.0.1", own + 2), side=Side.INSTANCE, source_ip="127.0.0.1")
    assert media.legs("c")[0].instance.remote is None  # no live stream of ours names this one back
    assert media.stats()["counters"]["sdp_address_refused"] == 1 and "spiral_passes_linked" not in \
        media.stats()["counters"]


async def test_two_passes_of_a_spiral_are_linked_only_when_each_names_the_other_and_unlinked_by_an_end(
        media: MediaService) -> None:
    """Pass 1 (phone A's) and pass 2 (phone B's) of one call: each instance side names the other's
    PBX-facing port. One naming the other alone sends nothing; both: voice goes A -> relay ->
    relay -> B over the host's own address; the end of pass 2 makes pass 1 forget it."""
    a_t, a, a_port = await udp("127.0.0.2")
    b_t, b, b_port = await udp("127.0.0.3")
    try:
        to_pbx = media.offer("c1", "f", offer_sdp("127.0.0.2", a_port), side=Side.PHONE, source_ip="127.0.0.2")
        to_b = media.offer("c1 127.0.0.3:5072", "f", to_pbx, side=Side.INSTANCE, source_ip="127.0.0.9")
        pass1, pass2 = media.legs("c1")[0], media.legs("c1 127.0.0.3:5072")[0]
        assert pass2.instance.remote is None and pass2.instance.expected_ip == "127.0.0.1"
        to_pbx2 = media.answer("c1 127.0.0.3:5072", "f", "t", offer_sdp("127.0.0.3", b_port), side=Side.PHONE,
                               source_ip="127.0.0.3")
        assert pass1.instance.remote is None and pass2.instance.remote is None  # nothing names pass 2 yet
        to_a = media.answer("c1", "f", "t", to_pbx2, side=Side.INSTANCE, source_ip="127.0.0.9")
        assert pass1.instance.remote == ("127.0.0.1", pass2.instance.port)
        assert pass2.instance.remote == ("127.0.0.1", pass1.instance.port)
        a_t.sendto(rtp(b"from-a"), ("127.0.0.1", port_of(to_a)))
        data, src = await asyncio.wait_for(b.got.get(), 2)
        assert data.endswith(b"from-a") and src == ("127.0.0.1", port_of(to_b))
        b_t.sendto(rtp(b"from-b", ssrc=b"BBBB"), ("127.0.0.1", port_of(to_b)))
        data, _ = await asyncio.wait_for(a.got.get(), 2)
        assert data.endswith(b"from-b") and media.stats()["counters"]["spiral_passes_linked"] == 1
        assert pass1.instance.src == ("127.0.0.1", pass2.instance.port)
        media.delete("c1 127.0.0.3:5072")
        assert pass1.instance.src is None and pass1.instance.remote is None  # its port serves other calls now
        a_t.sendto(rtp(b"after", seq=2), ("127.0.0.1", port_of(to_a)))
        await asyncio.sleep(0.2)
        assert b.got.empty() and pass1.phone.unsent == 1
        media.delete("c1")
        assert media.stats()["gauges"]["ports_in_use"] == 0 and not media.core.facing_instance
    finally:
        a_t.close()
        b_t.close()


async def test_an_instance_reoffer_with_other_streams_stays_counted_against_the_phone(media: MediaService) -> None:
    media.offer("c", "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    two = b"v=0\r\nc=IN IP4 127.0.0.3\r\n" + b"m=audio 5000 RTP/AVP 0\r\n" * 2
    media.offer("c", "t", two, side=Side.INSTANCE, source_ip="127.0.0.3")
    assert media.core.by_source == {"127.0.0.2": 2}
    media.delete("c")
    assert not media.core.by_source


async def test_an_instance_sdp_is_sent_to_only_at_its_signalling_address_or_a_configured_instance_host(
        media: MediaService) -> None:
    await media.reconfigure(dataclasses.replace(media.v, instance_hosts=frozenset({"127.0.0.8"})))
    for call, address, sent in (("a", "127.0.0.3", True), ("b", "127.0.0.8", True), ("c", "192.0.2.66", False),
                                ("d", "10.9.9.9", False)):
        media.offer(call, "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
        media.answer(call, "f", "t", offer_sdp(address, 5000), side=Side.INSTANCE, source_ip="127.0.0.3")
        instance = media.legs(call)[0].instance
        assert (instance.remote == (address, 5000)) is sent and (instance.remote is None) is not sent
        assert instance.expected_ip == (address if sent else "127.0.0.3")  # and a latch only from there
        media.delete(call)


async def test_an_instance_sdp_inside_its_media_sources_is_trusted_and_outside_is_not(media: MediaService) -> None:
    """A proxy-only PBX (kamailio) forwards the SDP of a phone registered at it directly: that
    phone's address is trusted only when the operator listed its network in `media_sources`."""
    nets = (ipaddress.ip_network("10.20.0.0/16"),)
    await media.reconfigure(dataclasses.replace(media.v, instance_networks=nets))
    for call, address, sent in (("a", "10.20.5.7", True), ("b", "10.21.0.1", False), ("c", "127.0.0.3", True)):
        media.offer(call, "f", offer_sdp("127.0.0.2", 4000), side=Side.PHONE, source_ip="127.0.0.2")
        media.answer(call, "f", "t", offer_sdp(address, 5000), side=Side.INSTANCE, source_ip="127.0.0.3")
        instance = media.legs(call)[0].instance
        assert (instance.remote == (address, 5000)) is sent
        assert instance.expected_ip == (address if sent else "127.0.0.3")
        media.delete(call)
    # a phone's own SDP is never trusted by the instance's networks
    media.offer("p", "f", offer_sdp("10.20.5.7", 4000), side=Side.PHONE, source_ip="127.0.0.2")
    assert media.legs("p")[0].phone.remote is None
    media.delete("p")


def test_media_sources_reach_the_view_from_the_config() -> None:
    cfg = parse_config(base_config(instances=[
        {"name": "a", "sip": "udp:127.0.0.1:5080", "media_sources": ["10.20.0.0/16", "192.0.2.7"]}],
        services={"sip": {"mode": "udp"}}))
    view = MediaService.view(cfg)
    assert view is not None and [str(n) for n in view.instance_networks] == ["10.20.0.0/16", "192.0.2.7/32"]
