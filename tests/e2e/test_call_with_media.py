"""A call through a running proxyd: SIP over UDP, SDP rewritten by the media relay, RTP both ways.

Phone and PBX are raw UDP sockets on loopback speaking just enough SIP for one INVITE/200.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.support import ProxydProcess, base_config, free_tcp_udp_port, free_udp_range


def sock() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s


def sdp(port: int) -> bytes:
    return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()


def m_port(body: bytes) -> int:
    found = re.search(rb"m=audio (\d+) ", body)
    assert found, body
    return int(found.group(1))


@pytest.mark.e2e
def test_invite_200_rewrites_sdp_and_rtp_flows(proxyd: Callable[..., ProxydProcess]) -> None:
    pbx, phone, phone_rtp, pbx_rtp = sock(), sock(), sock(), sock()
    sip_port, base = free_tcp_udp_port(), free_udp_range(40)
    p = proxyd(base_config(
        instances=[{"name": "acme", "sip": f"udp:127.0.0.1:{pbx.getsockname()[1]}", "sip_domains": ["acme.test"]}],
        services={"sip": {"mode": "udp", "udp_port": sip_port}, "media": {"mode": "rtp", "port_min": base,
                                                                           "port_max": base + 39}},
    ))
    ph = phone.getsockname()[1]
    body = sdp(phone_rtp.getsockname()[1])
    invite = (f"INVITE sip:bob@acme.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{ph};branch=z9hG4bKcall1;rport\r\n"
              f"Max-Forwards: 70\r\nFrom: <sip:alice@acme.test>;tag=a1\r\nTo: <sip:bob@acme.test>\r\n"
              f"Call-ID: media-e2e-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{ph}>\r\n"
              f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    phone.sendto(invite, ("127.0.0.1", sip_port))
    data, proxy_addr = pbx.recvfrom(65535)
    head, _, got_sdp = data.partition(b"\r\n\r\n")
    assert head.startswith(b"INVITE sip:bob@acme.test SIP/2.0")
    relay_for_pbx = m_port(got_sdp)
    assert base <= relay_for_pbx <= base + 39  # the PBX is pointed at the relay, not the phone

    vias = b"\r\n".join(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"via:"))
    rr = b"\r\n".join(ln for ln in head.split(b"\r\n") if ln.lower().startswith(b"record-route:"))
    answer = sdp(pbx_rtp.getsockname()[1])
    ok = (b"SIP/2.0 200 OK\r\n" + vias + b"\r\n" + (rr + b"\r\n" if rr else b"") +
          b"From: <sip:alice@acme.test>;tag=a1\r\nTo: <sip:bob@acme.test>;tag=b1\r\nCall-ID: media-e2e-1\r\n"
          b"CSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.1:" + str(pbx.getsockname()[1]).encode() + b">\r\n"
          b"Content-Type: application/sdp\r\nContent-Length: " + str(len(answer)).encode() + b"\r\n\r\n" + answer)
    pbx.sendto(ok, proxy_addr)
    data, _ = phone.recvfrom(65535)
    head, _, phone_sdp = data.partition(b"\r\n\r\n")
    assert head.startswith(b"SIP/2.0 200 OK")
    relay_for_phone = m_port(phone_sdp)
    assert base <= relay_for_phone <= base + 39 and relay_for_phone != relay_for_pbx

    phone_rtp.sendto(b"\x80\x00" + b"p" * 170, ("127.0.0.1", relay_for_phone))
    got, src = pbx_rtp.recvfrom(2048)
    assert got == b"\x80\x00" + b"p" * 170 and src[1] == relay_for_pbx
    pbx_rtp.sendto(b"\x80\x00" + b"b" * 170, ("127.0.0.1", relay_for_pbx))
    assert phone_rtp.recvfrom(2048)[0] == b"\x80\x00" + b"b" * 170
    status = p.status()["services"]
    assert status["media"]["gauges"]["active_streams"] == 1
    assert status["sip"]["listeners"] == [f"udp://127.0.0.1:{sip_port}", f"tcp://127.0.0.1:{sip_port}"]
    shown = subprocess.run([sys.executable, "-m", "proxyd", "status", "--state-dir", str(p.state_dir)],
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0 and f"udp://127.0.0.1:{sip_port}" in shown.stdout, shown.stderr
    for s in (pbx, phone, phone_rtp, pbx_rtp):
        s.close()
