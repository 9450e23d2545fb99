"""Run inside a fresh network namespace (only `lo` up, with 10.1.0.2, 10.1.0.3, 10.9.9.9 and
192.0.2.66/67 added to it): the attacks of issue 21 against a real proxyd, with real SIP over UDP
and real RTP/RTCP/SRTP packets, and a recorder on every address an SDP names. The PBX is
127.0.0.1; phones are 10.1.0.2 and 10.1.0.3. Prints one JSON object of observations; the test
(`test_attacks_netns.py`) states what they must be."""

from __future__ import annotations

import json
import re
import select
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from pylibsrtp import Policy, Session

from tests.support import ProxydProcess, base_config, free_tcp_udp_port, merge

PBX_IP, PHONE_IP, PHONE2_IP = "127.0.0.1", "10.1.0.2", "10.1.0.3"
PHONE_KEY = bytes(range(30))
PBX_KEY = bytes(range(100, 130))
WRONG_KEY = bytes(range(200, 230))
CRYPTO = "AES_CM_128_HMAC_SHA1_80"


def udp(ip: str, port: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    s.setblocking(False)
    return s


def drain(s: socket.socket, wait: float = 0.0) -> list[tuple[bytes, tuple[str, int]]]:
    """Everything that arrived on `s` (waiting up to `wait` for the first packet)."""
    out: list[tuple[bytes, tuple[str, int]]] = []
    if wait and not select.select([s], [], [], wait)[0]:
        return out
    while True:
        try:
            out.append(s.recvfrom(65535))
        except BlockingIOError:
            return out


def rtp(seq: int, ssrc: bytes, payload: bytes = b"v" * 160, pt: int = 0) -> bytes:
    return bytes([0x80, pt]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big") + ssrc + payload


def rr(ssrc: bytes) -> bytes:
    return bytes([0x80, 201, 0, 1]) + ssrc


def srtp_out(key: bytes) -> Session:
    return Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                          srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80))


def inline(key: bytes) -> str:
    import base64
    return f"a=crypto:1 {CRYPTO} inline:{base64.b64encode(key).decode()}"


def sdp(ip: str, ports: list[int], extra: tuple[str, ...] = (), srtp_key: bytes | None = None,
        rtpmap: bool = True) -> bytes:
    lines = ["v=0", f"o=- 1 1 IN IP4 {ip}", "s=-", f"c=IN IP4 {ip}", "t=0 0"]
    for p in ports:
        lines.append(f"m=audio {p} {'RTP/SAVP' if srtp_key else 'RTP/AVP'} 0")
        if rtpmap:
            lines.append("a=rtpmap:0 PCMU/8000")
        if srtp_key:
            lines.append(inline(srtp_key))
        lines += extra
    return ("\r\n".join(lines) + "\r\n").encode()


class Sip:
    """Just enough SIP for INVITE / 200 / 486 / CANCEL through the relay at 127.0.0.1:port."""

    def __init__(self, port: int, pbx: socket.socket):
        self.port, self.pbx = port, pbx

    def invite(self, phone: socket.socket, call_id: str, body: bytes, domain: str = "acme.test",
               wait: float = 5) -> tuple[str, bytes, Any]:
        """('pbx', INVITE as forwarded, relay address) or ('phone', the response, None)."""
        ip, ph = phone.getsockname()
        msg = (f"INVITE sip:bob@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{ph};branch=z9hG4bK{call_id};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:alice@{domain}>;tag=a{call_id}\r\nTo: <sip:bob@{domain}>\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{ip}:{ph}>\r\n"
               f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        phone.sendto(msg, ("127.0.0.1", self.port))
        ready = select.select([phone, self.pbx], [], [], wait)[0]
        if not ready:
            return "none", b"", None
        data, addr = ready[0].recvfrom(65535)
        return ("pbx", data, addr) if ready[0] is self.pbx else ("phone", data, None)

    def cancel(self, phone: socket.socket, call_id: str) -> None:
        ip, ph = phone.getsockname()
        msg = (f"CANCEL sip:bob@acme.test SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:{ph};branch=z9hG4bK{call_id};rport\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:alice@acme.test>;tag=a{call_id}\r\nTo: <sip:bob@acme.test>\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode()
        phone.sendto(msg, ("127.0.0.1", self.port))
        select.select([self.pbx], [], [], 5)
        drain(self.pbx)

    def respond(self, invite: bytes, addr: Any, call_id: str, status: str, body: bytes = b"") -> None:
        head = invite.partition(b"\r\n\r\n")[0].split(b"\r\n")
        keep = [ln for ln in head if ln.lower().startswith((b"via:", b"record-route:"))]
        ctype = b"Content-Type: application/sdp\r\n" if body else b""
        msg = (f"SIP/2.0 {status}\r\n".encode() + b"\r\n".join(keep) + b"\r\n" +
               f"From: <sip:alice@acme.test>;tag=a{call_id}\r\nTo: <sip:bob@acme.test>;tag=b{call_id}\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{PBX_IP}:5060>\r\n".encode() + ctype +
               f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.pbx.sendto(msg, addr)

    def answer(self, phone: socket.socket, invite: bytes, addr: Any, call_id: str, body: bytes) -> bytes:
        """200 OK with `body` from the PBX; the phone's copy (its SDP points at the relay)."""
        self.respond(invite, addr, call_id, "200 OK", body)
        got = drain(phone, 5)
        return got[0][0] if got else b""


def ports_of(body: bytes) -> list[int]:
    return [int(p) for p in re.findall(rb"m=audio (\d+) ", body)]


def sdp_of(msg: bytes) -> bytes:
    return msg.partition(b"\r\n\r\n")[2]


def status_line(msg: bytes) -> str:
    return msg.split(b"\r\n", 1)[0].decode(errors="replace")


def header(msg: bytes, name: str) -> str | None:
    for ln in msg.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        k, _, v = ln.decode(errors="replace").partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def proxyd(tmp: Path, sip_port: int, pbx: socket.socket, media: dict[str, Any],
           extra: list[dict[str, Any]] | None = None) -> ProxydProcess:
    cfg = base_config(
        instances=[{"name": "acme", "sip": f"udp:{PBX_IP}:{pbx.getsockname()[1]}", "sip_domains": ["acme.test"]},
                   *(extra or [])],
        services={"sip": {"mode": "udp", "udp_port": sip_port}, "media": media},
    )
    tmp.mkdir()
    return ProxydProcess(tmp, cfg).start()


def gauges(p: ProxydProcess) -> dict[str, int]:
    return dict(p.status()["services"]["media"]["gauges"])


# -- 1. reflection and SSRF ------------------------------------------------------------------
def reflection(sip: Sip, p: ProxydProcess) -> dict[str, Any]:
    out: dict[str, Any] = {}
    targets = {"third_party": ("192.0.2.66", 7000), "loopback": ("127.0.0.1", 7010),
               "internal": ("10.9.9.9", 7020), "unspecified": ("0.0.0.0", 7030)}
    for name, (ip, port) in targets.items():
        recorders = [udp(ip, port), udp(ip, port + 1), udp("192.0.2.67", port + 2), udp("10.9.9.9", port + 4)]
        phone_sip, phone_rtp = udp(PHONE_IP), udp(PHONE_IP)
        extra = [f"a=candidate:1 1 UDP 2130706431 192.0.2.67 {port + 2} typ host",
                 f"a=candidate:2 1 UDP 1694498815 10.9.9.9 {port + 4} typ srflx raddr 0.0.0.0 rport 9",
                 f"a=remote-candidates:1 192.0.2.67 {port + 2}", "a=ice-ufrag:abcd", "a=ice-pwd:" + "p" * 22]
        call_id = f"refl-{name}"
        kind, invite, addr = sip.invite(phone_sip, call_id, sdp(ip, [port], tuple(extra)))
        assert kind == "pbx", (kind, invite)
        to_pbx = sdp_of(invite)
        pbx_rtp = udp(PBX_IP)
        to_phone = sdp_of(sip.answer(phone_sip, invite, addr, call_id, sdp(PBX_IP, [pbx_rtp.getsockname()[1]])))
        relay_for_pbx, relay_for_phone = ports_of(to_pbx)[0], ports_of(to_phone)[0]
        ssrc = b"PBX1"
        for i in range(10):  # the PBX talks first: early media, RTP and RTCP
            pbx_rtp.sendto(rtp(i, ssrc), ("127.0.0.1", relay_for_pbx))
            pbx_rtp.sendto(rr(ssrc), ("127.0.0.1", relay_for_pbx + 1))
        time.sleep(0.5)
        recorded = sum(len(drain(r)) for r in recorders)
        # the phone proves itself from where its signalling came from: now it hears the PBX
        phone_rtp.sendto(rtp(1, b"PHN1"), ("127.0.0.1", relay_for_phone))
        got_at_pbx = len(drain(pbx_rtp, 2))
        for i in range(10, 15):
            pbx_rtp.sendto(rtp(i, ssrc), ("127.0.0.1", relay_for_pbx))
        time.sleep(0.3)
        out[name] = {"recorded": recorded + sum(len(drain(r)) for r in recorders),
                     "phone_got_after_latch": len(drain(phone_rtp, 1)), "pbx_got": got_at_pbx,
                     "ice_in_offer": b"candidate" in to_pbx or b"ice-" in to_pbx or b"192.0.2.67" in to_pbx}
        sip.respond(invite, addr, call_id, "486 Busy Here")  # not forwarded by a real PBX after 200: ends media
        for s in (*recorders, phone_sip, phone_rtp, pbx_rtp):
            s.close()
    return out


# -- 3. latch hijack ---------------------------------------------------------------------------
def hijack(sip: Sip, mode: str) -> dict[str, Any]:
    """The phone talks from A; an attacker on the phone's IP sends from B (junk, or SRTP under
    the wrong key with the right SSRC); then the PBX sends 10 packets: who gets them?"""
    phone_sip, phone_a, phone_b = udp(PHONE_IP), udp(PHONE_IP), udp(PHONE_IP)
    pbx_rtp = udp(PBX_IP)
    key = PHONE_KEY if mode == "srtp" else None
    call_id = f"hijack-{mode}"
    kind, invite, addr = sip.invite(phone_sip, call_id, sdp(PHONE_IP, [phone_a.getsockname()[1]], srtp_key=key))
    assert kind == "pbx", (kind, invite)
    relay_for_pbx = ports_of(sdp_of(invite))[0]
    answer = sdp(PBX_IP, [pbx_rtp.getsockname()[1]], srtp_key=PBX_KEY if key else None)
    relay_for_phone = ports_of(sdp_of(sip.answer(phone_sip, invite, addr, call_id, answer)))[0]
    phone_out, wrong_out, pbx_out = srtp_out(PHONE_KEY), srtp_out(WRONG_KEY), srtp_out(PBX_KEY)

    def seal(s: Session, pkt: bytes) -> bytes:
        return s.protect(pkt) if key else pkt

    phone_a.sendto(seal(phone_out, rtp(1, b"PHNA")), ("127.0.0.1", relay_for_phone))
    drain(pbx_rtp, 2)
    for i in range(20):
        junk = seal(wrong_out, rtp(100 + i, b"PHNA")) if key else b"junk, not RTP %d" % i
        phone_b.sendto(junk, ("127.0.0.1", relay_for_phone))
        if not key:
            phone_b.sendto(rtp(100 + i, b"EVIL"), ("127.0.0.1", relay_for_phone))  # RTP, another SSRC
    time.sleep(0.3)
    for i in range(10):
        pbx_rtp.sendto(seal(pbx_out, rtp(i, b"PBX1")), ("127.0.0.1", relay_for_pbx))
    time.sleep(0.5)
    out = {"phone_got": len(drain(phone_a)), "attacker_got": len(drain(phone_b)),
           "pbx_got_junk": len(drain(pbx_rtp))}
    sip.respond(invite, addr, call_id, "486 Busy Here")
    for s in (phone_sip, phone_a, phone_b, pbx_rtp):
        s.close()
    return out


def junk_keeps_alive(sip: Sip, p: ProxydProcess) -> dict[str, Any]:
    """A latched call that then hears only junk from a third party: released at the idle timeout."""
    phone_sip, phone_rtp, evil = udp(PHONE_IP), udp(PHONE_IP), udp("192.0.2.66")
    pbx_rtp = udp(PBX_IP)
    call_id = "junk-alive"
    kind, invite, addr = sip.invite(phone_sip, call_id, sdp(PHONE_IP, [phone_rtp.getsockname()[1]]))
    assert kind == "pbx", (kind, invite)
    relay_for_phone = ports_of(sdp_of(sip.answer(phone_sip, invite, addr, call_id,
                                                 sdp(PBX_IP, [pbx_rtp.getsockname()[1]]))))[0]
    phone_rtp.sendto(rtp(1, b"PHN1"), ("127.0.0.1", relay_for_phone))
    released_at = None
    t0 = time.monotonic()
    while time.monotonic() - t0 < 8:  # idle_timeout is 2 s
        evil.sendto(b"junk" * 40, ("127.0.0.1", relay_for_phone))
        evil.sendto(rtp(5, b"PHN1"), ("127.0.0.1", relay_for_phone))
        time.sleep(0.2)
        if gauges(p)["active_calls"] == 0:
            released_at = round(time.monotonic() - t0, 1)
            break
    for s in (phone_sip, phone_rtp, evil, pbx_rtp):
        s.close()
    return {"released_after": released_at}


# -- 2. range exhaustion ---------------------------------------------------------------------
def exhaustion(sip: Sip, p: ProxydProcess) -> dict[str, Any]:
    """Range of 12 ports (6 pairs; a stream takes 2), setup_timeout 1 s."""
    out: dict[str, Any] = {"start": gauges(p)}
    phone = udp(PHONE_IP)
    kind, resp, _ = sip.invite(phone, "four-m", sdp(PHONE_IP, [4000, 4002, 4004, 4006]))  # 8 pairs > 6
    out["four_m"] = {"kind": kind, "status": status_line(resp), "retry_after": header(resp, "Retry-After"),
                     "gauges": gauges(p)}
    big = sdp(PHONE_IP, list(range(2000, 2000 + 2 * 1300, 2)), rtpmap=False)
    kind, resp, _ = sip.invite(phone, "many-m", big)
    out["many_m"] = {"kind": kind, "status": status_line(resp), "size": len(big), "gauges": gauges(p)}

    # one source holds at most 2 streams (set by a reload); another source still gets in; a
    # refusal carries Retry-After
    p.reload(merge(p.config, {"revision": 2, "services": {"media": {"max_streams_per_source": 2}}}))
    held = []
    for i in range(3):
        kind, msg, addr = sip.invite(phone, f"src-{i}", sdp(PHONE_IP, [4100 + 2 * i]))
        held.append((kind, msg, addr))
    out["per_source"] = [k if k == "pbx" else status_line(m) + " Retry-After=" + str(header(m, "Retry-After"))
                         for k, m, _ in held]
    other = udp(PHONE2_IP)
    kind, other_invite, other_addr = sip.invite(other, "other-src", sdp(PHONE2_IP, [4200]))
    out["other_source"] = kind
    out["full"] = gauges(p)

    # every way out gives back: a CANCEL, a non-2xx final, an answered call that never latches
    sip.cancel(phone, "src-0")
    if held[1][0] == "pbx":
        sip.respond(held[1][1], held[1][2], "src-1", "486 Busy Here")
        drain(phone, 1)
    if kind == "pbx":
        sip.respond(other_invite, other_addr, "other-src", "200 OK", sdp(PBX_IP, [5000]))
        drain(other, 1)
    time.sleep(0.3)
    out["after_cancel_and_486"] = gauges(p)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6 and gauges(p)["active_calls"]:
        time.sleep(0.2)
    out["setup_timeout_after"] = round(time.monotonic() - t0, 1)
    out["end"] = gauges(p)
    kind, invite, addr = sip.invite(phone, "again", sdp(PHONE_IP, [4300]))
    out["again"] = kind
    if kind == "pbx":
        sip.respond(invite, addr, "again", "486 Busy Here")
    counters = p.status()["services"]["media"]["counters"]
    out["counters"] = {k: counters.get(k, 0) for k in ("setup_timeout_released", "refused_source_limit",
                                                       "ports_exhausted", "refused_488")}
    phone.close()
    other.close()
    return out


# -- 3. the other ways out: a transport error, a reload ---------------------------------------
def exits(sip: Sip, p: ProxydProcess) -> dict[str, Any]:
    """Range of 12 ports; instance `down` is a TCP PBX nobody listens for."""
    out: dict[str, Any] = {"start": gauges(p)}
    phone = udp(PHONE_IP)
    # the INVITE's connection is refused: the call never reached a PBX, its ports go back at once
    t0 = time.monotonic()
    sip.invite(phone, "to-down-pbx", sdp(PHONE_IP, [4000]), domain="down.test", wait=0.3)
    while time.monotonic() - t0 < 5 and gauges(p)["ports_in_use"]:
        time.sleep(0.1)
    out["transport_error"] = {"released_after": round(time.monotonic() - t0, 1), "gauges": gauges(p)}
    # a reload to another range while a call rings: the call keeps its ports, the new range is
    # offered from then on, and the CANCEL gives back the old ones
    kind, invite, addr = sip.invite(phone, "ringing", sdp(PHONE_IP, [4100]))
    assert kind == "pbx", (kind, invite)
    old_ports = ports_of(sdp_of(invite))
    p.reload(merge(p.config, {"revision": 2, "services": {"media": {"port_min": 20100, "port_max": 20111}}}))
    out["reload_during_call"] = gauges(p)
    kind, invite2, addr2 = sip.invite(phone, "after-reload", sdp(PHONE_IP, [4200]))
    new_ports = ports_of(sdp_of(invite2)) if kind == "pbx" else []
    out["ports"] = {"old_in_old_range": all(20000 <= q <= 20011 for q in old_ports),
                    "new_in_new_range": bool(new_ports) and all(20100 <= q <= 20111 for q in new_ports)}
    sip.cancel(phone, "ringing")
    sip.respond(invite2, addr2, "after-reload", "486 Busy Here")
    drain(phone, 1)
    time.sleep(0.3)
    out["end"] = gauges(p)
    out["counters"] = {k: v for k, v in p.status()["services"]["sip"]["counters"].items()
                       if k == "unsent_invites_released"}
    phone.close()
    return out


def attempt(scenario: Any, *args: Any) -> Any:
    """A scenario's observations, or the error that stopped it (a relay that misbehaves must not
    hide what the other scenarios saw)."""
    try:
        return scenario(*args)
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        return {"error": repr(exc)}


def main() -> None:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pbx = udp(PBX_IP)
        sip_port = free_tcp_udp_port()
        p = proxyd(Path(tmp) / "rtp", sip_port, pbx, {"mode": "rtp", "port_min": 20000, "port_max": 20039,
                                                       "idle_timeout": 2})
        try:
            sip = Sip(sip_port, pbx)
            results["reflection"] = attempt(reflection, sip, p)
            results["hijack_rtp"] = attempt(hijack, sip, "rtp")
            results["junk_keeps_alive"] = attempt(junk_keeps_alive, sip, p)
        finally:
            p.stop()
        p = proxyd(Path(tmp) / "srtp", sip_port, pbx, {"mode": "srtp", "port_min": 20000, "port_max": 20039})
        try:
            results["hijack_srtp"] = attempt(hijack, Sip(sip_port, pbx), "srtp")
        finally:
            p.stop()
        p = proxyd(Path(tmp) / "small", sip_port, pbx, {"mode": "rtp", "port_min": 20000, "port_max": 20011,
                                                         "setup_timeout": 1})
        try:
            results["exhaustion"] = attempt(exhaustion, Sip(sip_port, pbx), p)
        finally:
            p.stop()
        p = proxyd(Path(tmp) / "exits", sip_port, pbx, {"mode": "rtp", "port_min": 20000, "port_max": 20011},
                   extra=[{"name": "down", "sip": f"tcp:{PBX_IP}:{free_tcp_udp_port()}",
                           "sip_domains": ["down.test"]}])
        try:
            results["exits"] = attempt(exits, Sip(sip_port, pbx), p)
        finally:
            p.stop()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
