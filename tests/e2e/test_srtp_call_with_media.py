"""Mode srtp through a running proxyd: a phone without SRTP gets 488; an SRTP phone calling a
plain-RTP PBX is bridged — the PBX hears the phone's RTP in clear, the phone hears SRTP under
the relay's own key from the 200 OK. Raw sockets play phone and PBX; pylibsrtp is the phone's
SRTP stack."""

from __future__ import annotations

import base64
import os
import re
import socket
import struct
from collections.abc import Callable

import pytest
from pylibsrtp import Policy, Session

from tests.support import ProxydProcess, base_config, free_tcp_udp_port, free_udp_range

PROFILE = Policy.SRTP_PROFILE_AES128_CM_SHA1_80


def sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s


def sdp(port: int, key: bytes | None) -> bytes:
    proto = "RTP/SAVP" if key else "RTP/AVP"
    crypto = f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(key).decode()}\r\n" if key else ""
    return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} {proto} 0\r\na=rtpmap:0 PCMU/8000\r\n{crypto}").encode()


def invite(ph: int, call_id: str, body: bytes) -> bytes:
    return (f"INVITE sip:bob@acme.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{ph};branch=z9hG4bK{call_id};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:alice@acme.test>;tag=a1\r\nTo: <sip:bob@acme.test>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{ph}>\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def rtp(seq: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


@pytest.mark.e2e
@pytest.mark.parametrize("rtp_only", [False, True])
def test_srtp_mode_refuses_plain_phones_and_bridges_to_a_plain_pbx(proxyd: Callable[..., ProxydProcess],
                                                                   rtp_only: bool) -> None:
    """rtp_only: the instance says its PBX refuses SRTP offers, so it is offered plain RTP."""
    pbx, phone, phone_rtp, pbx_rtp = sock(), sock(), sock(), sock()
    sip_port, base = free_tcp_udp_port(), free_udp_range(40)
    p = proxyd(base_config(
        instances=[{"name": "acme", "sip": f"udp:127.0.0.1:{pbx.getsockname()[1]}", "sip_domains": ["acme.test"],
                    "rtp_only": rtp_only}],
        services={"sip": {"mode": "udp", "udp_port": sip_port}, "media": {"mode": "srtp", "port_min": base,
                                                                           "port_max": base + 39}},
    ))
    ph = phone.getsockname()[1]
    phone.sendto(invite(ph, "plain-1", sdp(phone_rtp.getsockname()[1], None)), ("127.0.0.1", sip_port))
    data = phone.recvfrom(65535)[0]
    while data.startswith(b"SIP/2.0 100"):
        data = phone.recvfrom(65535)[0]
    assert data.startswith(b"SIP/2.0 488"), data[:200]

    k_phone = os.urandom(30)
    phone.sendto(invite(ph, "srtp-1", sdp(phone_rtp.getsockname()[1], k_phone)), ("127.0.0.1", sip_port))
    data, proxy_addr = pbx.recvfrom(65535)
    head, _, got_sdp = data.partition(b"\r\n\r\n")
    assert head.startswith(b"INVITE")
    if rtp_only:
        assert b"RTP/AVP" in got_sdp and b"RTP/SAVP" not in got_sdp and b"a=crypto" not in got_sdp
    else:
        assert b"RTP/SAVP" in got_sdp  # offered as is: the PBX may speak SRTP
    relay_for_pbx = int(re.search(rb"m=audio (\d+) ", got_sdp).group(1))  # type: ignore[union-attr]

    # the PBX answers plain RTP: the relay bridges
    vias = b"\r\n".join(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"via:"))
    rr = b"\r\n".join(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"record-route:"))
    answer = sdp(pbx_rtp.getsockname()[1], None)
    ok = (b"SIP/2.0 200 OK\r\n" + vias + b"\r\n" + (rr + b"\r\n" if rr else b"") +
          b"From: <sip:alice@acme.test>;tag=a1\r\nTo: <sip:bob@acme.test>;tag=b1\r\nCall-ID: srtp-1\r\n"
          b"CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:" + str(pbx.getsockname()[1]).encode() + b">\r\n"
          b"Content-Type: application/sdp\r\nContent-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer)
    pbx.sendto(ok, proxy_addr)
    data = phone.recvfrom(65535)[0]
    while data.startswith(b"SIP/2.0 100"):
        data = phone.recvfrom(65535)[0]
    head, _, phone_sdp = data.partition(b"\r\n\r\n")
    assert head.startswith(b"SIP/2.0 200 OK")
    m = re.search(rb"m=audio (\d+) RTP/SAVP 0", phone_sdp)
    key = re.search(rb"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:([A-Za-z0-9+/=]+)", phone_sdp)
    assert m and key, phone_sdp
    relay_key = base64.b64decode(key.group(1))
    assert relay_key != k_phone

    phone_tx = Session(Policy(key=k_phone, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE))
    phone_rx = Session(Policy(key=relay_key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE))
    phone_rtp.sendto(phone_tx.protect(rtp(1, 0xA, b"p" * 160)), ("127.0.0.1", int(m.group(1))))
    assert pbx_rtp.recvfrom(2048)[0] == rtp(1, 0xA, b"p" * 160)  # clear RTP on the inside
    pbx_rtp.sendto(rtp(1, 0xB, b"b" * 160), ("127.0.0.1", relay_for_pbx))
    assert phone_rx.unprotect(phone_rtp.recvfrom(2048)[0]) == rtp(1, 0xB, b"b" * 160)
    media = p.status()["services"]["media"]
    assert media["counters"]["srtp_bridged"] == 1 and media["counters"]["refused_488"] == 1
    assert media["streams"][0]["srtp_bridged"] is True
    for s in (pbx, phone, phone_rtp, pbx_rtp):
        s.close()
