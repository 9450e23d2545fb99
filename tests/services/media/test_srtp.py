"""SRTP through the relay on real loopback UDP: opaque end to end, and bridged SRTP<->RTP with the
relay's own key (pylibsrtp on the test side plays the phone)."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from proxyd.access import AccessList
from proxyd.service import ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore
from services.media import sdes
from services.media import sdp as sdplib
from services.media.service import MediaService, MediaView
from services.media_api import Side
from tests.services.media.test_media import Peer, udp
from tests.support import free_udp_range

SUITE = "AES_CM_128_HMAC_SHA1_80"
PROFILE = Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def sdp(ip: str, port: int, proto: str, key: bytes | None = None, mux: bool = False) -> bytes:
    lines = ["v=0", f"o=- 1 1 IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0", f"m=audio {port} {proto} 0",
             "a=rtpmap:0 PCMU/8000", "a=sendrecv"]
    if key is not None:
        lines.append(f"a=crypto:1 {SUITE} inline:{base64.b64encode(key).decode()}")
    if mux:
        lines.append("a=rtcp-mux")
    return ("\r\n".join(lines) + "\r\n").encode()


def rtp(seq: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


def rtcp_sr(ssrc: int) -> bytes:
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 0, 0, 0, 0, 0)


def tx(key: bytes) -> Session:
    return Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE))


def rx(key: bytes) -> Session:
    return Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE))


def media_of(body: bytes) -> sdplib.Media:
    return sdplib.parse(body)[0]


@pytest.fixture
async def media(tmp_path: Path):
    state = StateDir(tmp_path).ensure()
    svc = MediaService(ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList()))
    base = free_udp_range(24)
    await svc.start(MediaView("srtp", base, base + 23, 60.0, "127.0.0.1", None))
    yield svc
    await svc.stop(1)


async def recv(peer: Peer) -> bytes:
    return (await asyncio.wait_for(peer.got.get(), 5))[0]


async def test_srtp_both_sides_is_relayed_opaque(media: MediaService) -> None:
    phone_t, phone, phone_port = await udp("127.0.0.2")
    pbx_t, pbx, pbx_port = await udp("127.0.0.3")
    k_phone, k_pbx = os.urandom(30), os.urandom(30)
    to_pbx = media.offer("o1", "f", sdp("127.0.0.2", phone_port, "RTP/SAVP", k_phone), side=Side.PHONE,
                               source_ip="127.0.0.2")
    to_phone = media.answer("o1", "f", "t", sdp("127.0.0.3", pbx_port, "RTP/SAVP", k_pbx),
                                  side=Side.INSTANCE, source_ip="127.0.0.3")
    # keys pass end to end untouched: the relay cannot read the media
    assert media_of(to_pbx).cryptos == media_of(sdp("x", 1, "RTP/SAVP", k_phone)).cryptos
    assert media_of(to_phone).cryptos == media_of(sdp("x", 1, "RTP/SAVP", k_pbx)).cryptos
    sent = tx(k_phone).protect(rtp(1, 0x1111, b"v" * 160))
    phone_t.sendto(sent, ("127.0.0.1", media_of(to_phone).port))
    got = await recv(pbx)
    assert got == sent and rx(k_phone).unprotect(got) == rtp(1, 0x1111, b"v" * 160)
    back = tx(k_pbx).protect(rtp(7, 0x2222, b"w" * 160))
    pbx_t.sendto(back, ("127.0.0.1", media_of(to_pbx).port))
    assert await recv(phone) == back
    assert media.stats()["streams"][0]["srtp_bridged"] is False
    for t in (phone_t, pbx_t):
        t.close()


@pytest.mark.parametrize("mux", [False, True])
async def test_phone_srtp_bridged_to_plain_rtp_instance(media: MediaService, mux: bool) -> None:
    phone_t, phone, phone_port = await udp("127.0.0.2")
    pbx_t, pbx, pbx_port = await udp("127.0.0.3")
    k_phone = os.urandom(30)
    media.offer("b1", "f", sdp("127.0.0.2", phone_port, "RTP/SAVP", k_phone, mux), side=Side.PHONE,
                      source_ip="127.0.0.2")
    to_phone = media.answer("b1", "f", "t", sdp("127.0.0.3", pbx_port, "RTP/AVP", None, mux),
                                  side=Side.INSTANCE, source_ip="127.0.0.3")
    answer = media_of(to_phone)
    assert answer.proto == "RTP/SAVP" and len(answer.cryptos) == 1  # the phone hears SRTP with the relay's key
    relay_key = sdes.parse(answer.cryptos[0])
    assert relay_key is not None and relay_key.key != k_phone and relay_key.suite == SUITE
    relay_for_pbx = media.legs("b1")[0].instance_port
    relay_for_phone = answer.port

    phone_tx, phone_rx = tx(k_phone), rx(relay_key.key)
    for seq in range(1, 4):
        phone_t.sendto(phone_tx.protect(rtp(seq, 0xAAAA, bytes([seq]) * 160)), ("127.0.0.1", relay_for_phone))
        assert await recv(pbx) == rtp(seq, 0xAAAA, bytes([seq]) * 160)  # plain RTP inside
        pbx_t.sendto(rtp(seq, 0xBBBB, b"pbx" * 50), ("127.0.0.1", relay_for_pbx))
        assert phone_rx.unprotect(await recv(phone)) == rtp(seq, 0xBBBB, b"pbx" * 50)

    # a re-INVITE from the phone: the instance keeps hearing plain RTP, the relay keeps its key and its
    # libsrtp sessions (no rollover-counter restart under the same key, the replay window stays)
    again = media.offer("b1", "f", sdp("127.0.0.2", phone_port, "RTP/SAVP", k_phone, mux), side=Side.PHONE,
                              source_ip="127.0.0.2")
    assert media_of(again).proto == "RTP/AVP" and not media_of(again).cryptos
    to_phone = media.answer("b1", "f", "t", sdp("127.0.0.3", pbx_port, "RTP/AVP", None, mux),
                                  side=Side.INSTANCE, source_ip="127.0.0.3")
    assert sdes.parse(media_of(to_phone).cryptos[0]) == relay_key
    replayed = phone_tx.protect(rtp(4, 0xAAAA, b"r" * 160))
    phone_t.sendto(replayed, ("127.0.0.1", relay_for_phone))
    assert await recv(pbx) == rtp(4, 0xAAAA, b"r" * 160)
    phone_t.sendto(replayed, ("127.0.0.1", relay_for_phone))  # the same packet again: a replay, dropped
    pbx_t.sendto(rtp(4, 0xBBBB, b"pbx" * 50), ("127.0.0.1", relay_for_pbx))
    assert phone_rx.unprotect(await recv(phone)) == rtp(4, 0xBBBB, b"pbx" * 50)
    assert pbx.got.empty()

    # SRTCP too: on the RTCP port, or demultiplexed on the RTP port under rtcp-mux
    rtcp_for_phone = relay_for_phone if mux else relay_for_phone + 1
    rtcp_for_pbx = relay_for_pbx if mux else relay_for_pbx + 1
    pbx_rtcp_t, pbx_rtcp, _ = (pbx_t, pbx, 0) if mux else await udp_at("127.0.0.3", pbx_port + 1)
    phone_rtcp_t, phone_rtcp, _ = (phone_t, phone, 0) if mux else await udp_at("127.0.0.2", phone_port + 1)
    phone_rtcp_t.sendto(phone_tx.protect_rtcp(rtcp_sr(0xAAAA)), ("127.0.0.1", rtcp_for_phone))
    assert await recv(pbx_rtcp) == rtcp_sr(0xAAAA)
    pbx_rtcp_t.sendto(rtcp_sr(0xBBBB), ("127.0.0.1", rtcp_for_pbx))
    assert phone_rx.unprotect_rtcp(await recv(phone_rtcp)) == rtcp_sr(0xBBBB)

    # a forged packet (wrong key) never reaches the instance
    drops, failed = media.stats()["counters"]["drops"], media.stats()["counters"]["srtp_auth_failures"]
    phone_t.sendto(tx(os.urandom(30)).protect(rtp(9, 0xAAAA, b"x" * 160)), ("127.0.0.1", relay_for_phone))
    await asyncio.sleep(0.2)
    assert pbx.got.empty() and media.stats()["counters"]["drops"] == drops + 1
    assert media.stats()["counters"]["srtp_auth_failures"] == failed + 1  # pforte_media_srtp_auth_failures_total
    assert media.stats()["streams"][0]["srtp_bridged"] is True and media.stats()["counters"]["srtp_bridged"] == 2
    for t in {phone_t, pbx_t, pbx_rtcp_t, phone_rtcp_t}:
        t.close()


async def test_rtp_only_instance_is_offered_plain_rtp_and_bridged(media: MediaService) -> None:
    """An instance that refuses SRTP offers (`rtp_only`): the phone's SRTP offer reaches it as
    plain RTP without keys, and its plain answer bridges the stream as usual."""
    phone_t, phone, phone_port = await udp("127.0.0.2")
    pbx_t, pbx, pbx_port = await udp("127.0.0.3")
    k_phone = os.urandom(30)
    to_pbx = media_of(media.offer("r1", "f", sdp("127.0.0.2", phone_port, "RTP/SAVP", k_phone),
                                        side=Side.PHONE, source_ip="127.0.0.2", instance_rtp_only=True))
    assert to_pbx.proto == "RTP/AVP" and not to_pbx.cryptos
    to_phone = media_of(media.answer("r1", "f", "t", sdp("127.0.0.3", pbx_port, "RTP/AVP"),
                                           side=Side.INSTANCE, source_ip="127.0.0.3"))
    relay_key = sdes.parse(to_phone.cryptos[0])
    assert to_phone.proto == "RTP/SAVP" and relay_key is not None and relay_key.key != k_phone
    phone_t.sendto(tx(k_phone).protect(rtp(1, 0xAAAA, b"a" * 160)), ("127.0.0.1", to_phone.port))
    assert await recv(pbx) == rtp(1, 0xAAAA, b"a" * 160)
    pbx_t.sendto(rtp(1, 0xBBBB, b"b" * 160), ("127.0.0.1", to_pbx.port))
    assert rx(relay_key.key).unprotect(await recv(phone)) == rtp(1, 0xBBBB, b"b" * 160)
    assert media.stats()["streams"][0]["srtp_bridged"] is True
    for t in (phone_t, pbx_t):
        t.close()


async def test_plain_rtp_instance_offer_is_bridged_towards_the_phone(media: MediaService) -> None:
    phone_t, phone, phone_port = await udp("127.0.0.2")
    pbx_t, pbx, pbx_port = await udp("127.0.0.3")
    to_phone = media.offer("b2", "f", sdp("127.0.0.3", pbx_port, "RTP/AVP"), side=Side.INSTANCE,
                                 source_ip="127.0.0.3")
    offer = media_of(to_phone)
    relay_key = sdes.parse(offer.cryptos[0])
    assert offer.proto == "RTP/SAVP" and relay_key is not None
    k_phone = os.urandom(30)
    to_pbx = media.answer("b2", "f", "t", sdp("127.0.0.2", phone_port, "RTP/SAVP", k_phone),
                                side=Side.PHONE, source_ip="127.0.0.2")
    assert media_of(to_pbx).proto == "RTP/AVP" and not media_of(to_pbx).cryptos  # the instance hears plain RTP
    phone_t.sendto(tx(k_phone).protect(rtp(1, 0xAAAA, b"p" * 160)), ("127.0.0.1", offer.port))
    assert await recv(pbx) == rtp(1, 0xAAAA, b"p" * 160)
    pbx_t.sendto(rtp(1, 0xBBBB, b"q" * 160), ("127.0.0.1", media_of(to_pbx).port))
    assert rx(relay_key.key).unprotect(await recv(phone)) == rtp(1, 0xBBBB, b"q" * 160)
    for t in (phone_t, pbx_t):
        t.close()


async def udp_at(ip: str, port: int) -> tuple[asyncio.DatagramTransport, Peer, int]:
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(Peer, local_addr=(ip, port))
    return t, p, port


def test_sdes_reads_usable_keys_and_skips_the_rest() -> None:
    key = os.urandom(30)
    line = f"2 {SUITE} inline:{base64.b64encode(key).decode()}"
    assert sdes.parse(line) == sdes.Crypto("2", SUITE, key)
    assert sdes.parse(sdes.parse(line).line()) == sdes.parse(line)  # type: ignore[union-attr]
    for bad in (f"1 {SUITE} inline:{base64.b64encode(key).decode()}|2^20|1:4", "1 F8_128_HMAC_SHA1_80 inline:AAAA",
                f"1 {SUITE} inline:{base64.b64encode(key[:10]).decode()}", f"1 {SUITE} inline:!!!", "1"):
        assert sdes.parse(bad) is None
    assert sdes.choose(("1 F8_128_HMAC_SHA1_80 inline:AAAA", line)) == sdes.Crypto("2", SUITE, key)
    assert sdes.own().key != sdes.own().key and len(sdes.own().key) == 30


def test_sdp_edit_changes_transport_and_keys_only() -> None:
    original = sdp("127.0.0.5", 4000, "RTP/AVP")
    out = sdplib.rewrite(original, "127.0.0.9", [(40002, 40003)], [sdplib.Edit("RTP/SAVP", ("1 X inline:AAAA",))])
    m = sdplib.parse(out)[0]
    assert m.proto == "RTP/SAVP" and m.cryptos == ("1 X inline:AAAA",) and m.port == 40002
    back = sdplib.rewrite(out, "127.0.0.5", [(4000, 4001)], [sdplib.Edit("RTP/AVP", ())])
    assert back == original


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_sdp_and_sdes_parsers_never_crash(text: str) -> None:
    try:
        sdplib.parse(text.encode())
    except sdplib.SdpError:
        pass
    sdes.parse(text)


async def test_bridged_stream_relatches_only_to_an_authenticated_packet_after_silence(media: MediaService) -> None:
    phone_t, phone, phone_port = await udp("127.0.0.2")
    pbx_t, pbx, pbx_port = await udp("127.0.0.3")
    k_phone = os.urandom(30)
    media.offer("r1", "f", sdp("127.0.0.2", phone_port, "RTP/SAVP", k_phone), side=Side.PHONE,
                      source_ip="127.0.0.2")
    to_phone = media.answer("r1", "f", "t", sdp("127.0.0.3", pbx_port, "RTP/AVP"), side=Side.INSTANCE,
                                  source_ip="127.0.0.3")
    relay_for_phone, relay_for_pbx = media_of(to_phone).port, media.legs("r1")[0].instance_port
    phone_tx = tx(k_phone)
    phone_t.sendto(phone_tx.protect(rtp(1, 0xAAAA, b"a" * 160)), ("127.0.0.1", relay_for_phone))
    assert await recv(pbx) == rtp(1, 0xAAAA, b"a" * 160)

    # the latched port falls silent; another port of the phone's IP sends SRTP under a wrong key
    # (right SSRC and payload type): never latched, never forwarded, the phone keeps the stream
    other_t, other, _ = await udp("127.0.0.2")
    t = time.monotonic()
    media.expire_idle(t)
    media.expire_idle(t + 2.0)
    forged = tx(os.urandom(30))
    for seq in range(2, 22):
        other_t.sendto(forged.protect(rtp(seq, 0xAAAA, b"f" * 160)), ("127.0.0.1", relay_for_phone))
    await asyncio.sleep(0.2)
    pbx_t.sendto(rtp(1, 0xBBBB, b"pbx" * 50), ("127.0.0.1", relay_for_pbx))
    await recv(phone)
    assert pbx.got.empty() and other.got.empty()
    assert media.legs("r1")[0].phone.drops == 20 == media.legs("r1")[0].phone.auth_failures

    # the phone's NAT rebinds: its own authenticated packet from the new port takes the stream
    other_t.sendto(phone_tx.protect(rtp(2, 0xAAAA, b"n" * 160)), ("127.0.0.1", relay_for_phone))
    assert await recv(pbx) == rtp(2, 0xAAAA, b"n" * 160)
    pbx_t.sendto(rtp(2, 0xBBBB, b"pbx" * 50), ("127.0.0.1", relay_for_pbx))
    await recv(other)
    for s in (phone_t, pbx_t, other_t):
        s.close()


def test_a_phone_rebinding_after_the_rollover_counter_moved_on_is_still_proven() -> None:
    """Only a latching packet needs the verifier, but libsrtp guesses the rollover counter from
    the last index it saw: the relay shows it a packet of the latched source now and then, so
    a rebinding after 70,000 packets (seq wrapped once) is still authenticated."""
    from services.media import srtp as srtplib
    from services.media.relay import Endpoint, Leg

    key = os.urandom(30)
    verifier = srtplib.session(sdes.Crypto("1", SUITE, key), inbound=True)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.bind(("127.0.0.1", 0))
    out.setblocking(False)
    phone, instance = Endpoint(40000), Endpoint(40002, out)
    Leg(phone, instance)
    phone.expected_ip, phone.pts, instance.remote = "127.0.0.2", frozenset({0}), sink.getsockname()
    phone.verify = srtplib.decrypter(verifier, rtcp_port=False, mux=False)
    sender = tx(key)
    for n in range(70_000):
        phone.datagram_received(sender.protect(rtp(n & 0xFFFF, 0xAAAA, b"")), ("127.0.0.2", 5000))
    assert phone.src == ("127.0.0.2", 5000) and phone.packets == 70_000
    phone.check(0.0)
    phone.check(2.0)
    phone.datagram_received(sender.protect(rtp(70_000 & 0xFFFF, 0xAAAA, b"")), ("127.0.0.2", 6000))
    assert phone.src == ("127.0.0.2", 6000) and phone.drops == 0
    sink.close()
    out.close()
