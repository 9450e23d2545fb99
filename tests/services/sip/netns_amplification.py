"""Run inside a fresh network namespace (only `lo` up): a spoofer sends INVITEs and OPTIONS with
the source address of a victim (raw IP packets, so the victim's socket never sends a byte) to a
real proxyd over UDP; the PBX answers as one without digest does (100, 180, a 200 with SDP
retransmitted until an ACK that never comes). A real phone makes calls through the same proxyd
meanwhile. Prints one JSON object: bytes the spoofer sent, the victim received and the PBX
sent towards the victim, and how the phone's calls went."""

from __future__ import annotations

import json
import select
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

from services.sip.message import parse, response
from tests.support import ProxydProcess, base_config, free_tcp_udp_port

VICTIM = ("127.0.0.9", 7000)
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
       b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")
#: a 2xx to an INVITE is retransmitted until the ACK: T1 doubling, 7 times (RFC 3261 §13.3.1.4),
#: compressed in time here
RETRANSMITS = (0.02, 0.04, 0.08, 0.16, 0.32, 0.32, 0.32)


class Pbx(threading.Thread):
    """A PBX without digest: answers every INVITE 100, 180, 200 (+SDP, retransmitted until ACKed),
    OPTIONS and BYE 200. `sent_to_via`: bytes of answers per Call-ID prefix."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.acked: set[str] = set()
        self.pending: list[tuple[float, int, bytes, tuple[str, int], str]] = []  # 200s to retransmit
        self.sent: dict[str, int] = {}  # Call-ID prefix ("spoof", "call") -> bytes

    def send(self, data: bytes, addr: tuple[str, int], call_id: str) -> None:
        self.sock.sendto(data, addr)
        kind = call_id.split("-")[0]
        self.sent[kind] = self.sent.get(kind, 0) + len(data)

    def run(self) -> None:
        while True:
            now = time.monotonic()
            wait = min([p[0] for p in self.pending], default=now + 0.1) - now
            ready, _, _ = select.select([self.sock], [], [], max(0.0, wait))
            if ready:
                data, addr = self.sock.recvfrom(65535)
                self.answer(data, addr)
            now = time.monotonic()
            for item in [p for p in self.pending if p[0] <= now]:
                self.pending.remove(item)
                _, n, ok, addr, call_id = item
                if call_id in self.acked:
                    continue
                self.send(ok, addr, call_id)
                if n + 1 < len(RETRANSMITS):
                    self.pending.append((now + RETRANSMITS[n + 1], n + 1, ok, addr, call_id))

    def answer(self, data: bytes, addr: tuple[str, int]) -> None:
        req = parse(data)
        call_id = req.get("Call-ID") or ""
        if req.method == "ACK":
            self.acked.add(call_id)
            return
        if req.method == "INVITE":
            self.send(response(req, 100, "Trying").serialize(), addr, call_id)
            self.send(response(req, 180, "Ringing", "pbx" + call_id).serialize(), addr, call_id)
            ok = response(req, 200, "OK", "pbx" + call_id)
            ok.headers += [["Contact", "<sip:bob@127.0.0.1:%d>" % self.port],  # noqa: UP031
                           ["Content-Type", "application/sdp"]]
            ok.body = SDP
            data = ok.serialize()
            self.send(data, addr, call_id)
            self.pending.append((time.monotonic() + RETRANSMITS[0], 0, data, addr, call_id))
            return
        ok = response(req, 200, "OK", "pbx" + call_id)
        if req.method == "OPTIONS":
            ok.headers += [["Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, UPDATE, PRACK"],
                           ["Accept", "application/sdp, application/dtmf-relay"],
                           ["Supported", "replaces, timer, path, outbound"], ["User-Agent", "recording pbx"]]
        self.send(ok.serialize(), addr, call_id)


def invite(call_id: str, src: tuple[str, int], method: str = "INVITE", to_tag: str = "", cseq: int = 1) -> bytes:
    body = SDP if method == "INVITE" else b""
    to = "<sip:bob@a.test>" + (f";tag={to_tag}" if to_tag else "")
    head = (f"{method} sip:bob@a.test SIP/2.0\r\nVia: SIP/2.0/UDP {src[0]}:{src[1]};branch=z9hG4bK{call_id}{cseq}"
            f"{method[0]}\r\nFrom: <sip:alice@a.test>;tag=f{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: {cseq} {method}\r\nContact: <sip:alice@{src[0]}:{src[1]}>\r\nMax-Forwards: 70\r\n"
            + ("Content-Type: application/sdp\r\n" if body else "") + f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def spoofed(payload: bytes, src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """An IPv4/UDP packet from `src` (the kernel fills in the IP checksum; UDP checksum 0: none)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
    return ip + udp


def main() -> None:
    pbx = Pbx()
    pbx.start()
    victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    victim.bind(VICTIM)
    port = free_tcp_udp_port()
    cfg = base_config(instances=[{"name": "a", "sip": f"udp:127.0.0.1:{pbx.port}", "sip_domains": ["a.test"]}],
                      services={"sip": {"mode": "udp", "udp_port": port}})
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc = ProxydProcess(Path(tmp), cfg).start()
        raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phone.bind(("127.0.0.1", 0))
        try:
            sent, calls = 0, []
            for n in range(20):
                for data in (invite(f"spoof-{n}", VICTIM), invite(f"spoof-o{n}", VICTIM, "OPTIONS")):
                    raw.sendto(spoofed(data, VICTIM, ("127.0.0.1", port)), ("127.0.0.1", 0))
                    sent += len(data)
                calls.append(call(phone, port, f"call-{n}"))
            time.sleep(1.6)  # the PBX's retransmissions are over
            got = 0
            while select.select([victim], [], [], 0.2)[0]:
                got += len(victim.recv(65535))
            out.update(calls=calls, spoofer_sent=sent, victim_received=got, pbx_sent_to_victim=pbx.sent.get("spoof", 0),
                       sip=proc.status()["services"]["sip"])
        finally:
            raw.close()
            phone.close()
            proc.stop()
    print(json.dumps(out))


def call(phone: socket.socket, port: int, call_id: str) -> str:
    """One call: INVITE, the 200, ACK, BYE, its 200. The outcome ("completed" or what failed)."""
    me = phone.getsockname()
    proxy = ("127.0.0.1", port)
    phone.sendto(invite(call_id, me), proxy)
    to_tag = ""
    deadline = time.monotonic() + 3
    while not to_tag:
        if not select.select([phone], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return "no 200 to the INVITE"
        msg = parse(phone.recv(65535))
        if msg.status == 200 and (msg.get("CSeq") or "").endswith("INVITE"):
            to_tag = (msg.get("To") or "").partition(";tag=")[2]
    phone.sendto(invite(call_id, me, "ACK", to_tag), proxy)
    phone.sendto(invite(call_id, me, "BYE", to_tag, cseq=2), proxy)
    deadline = time.monotonic() + 3
    while True:
        if not select.select([phone], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return "no 200 to the BYE"
        msg = parse(phone.recv(65535))
        if msg.status == 200 and (msg.get("CSeq") or "").endswith("BYE"):
            return "completed"


if __name__ == "__main__":
    main()
