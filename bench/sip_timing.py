"""In-process timing of the SIP relay's per-message cost, without sockets or sipp noise.

Records the datagrams of N calls as the bench's sipp peers send them (phone INVITE, PBX
100/180/200, phone ACK and BYE, PBX 200; the PBX side echoes Via/Record-Route the way sipp's
`[last_*:]` does, joined on one line), then replays them through a fresh service with the same
flow key and fake transports and prints µs per message: the sans-IO `Relay.receive` alone and
`SipService.on_data` (the UDP handler minus the kernel). Caches that fill per call are cleared
before each replay, so every call's lines are new to the scanner as they would be live.

    .venv/bin/python -m bench.sip_timing [calls] [--profile]

Run it while nothing else loads the machine (timings on a shared VM drift by a third).
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from proxyd.access import AccessList
from proxyd.config import parse_config
from proxyd.service import ServiceContext
from proxyd.statedir import StateDir
from proxyd.tls import CertStore
from services.sip import scan as scan_mod
from services.sip.flow import Flow
from services.sip.message import valid_request_uri
from services.sip.service import SipService

PHONE = Flow("p", "udp", "127.0.0.1", 5070)
PBX_PORT = 5080
PBX = Flow("b", "udp", "127.0.0.1", PBX_PORT)
SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n\r\n")


class FakeUdp:
    """A datagram transport that keeps what is sent (address, bytes)."""

    def __init__(self, port: int):
        self.port = port
        self.sent: list[tuple[tuple[str, int], bytes]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((addr, data))

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", self.port) if name == "sockname" else None

    def close(self) -> None:
        pass


def make_service(state_dir: Path) -> SipService:
    state = StateDir(state_dir).ensure()
    ctx = ServiceContext(state=state, certs=CertStore(state.certs), access=AccessList())
    cfg = parse_config({"version": 1, "revision": 1, "proxy": {"name": "t", "fqdn": "proxy.test", "enabled": True},
                        "bind": "127.0.0.1",
                        "instances": [{"name": "pbx", "sip": f"udp:127.0.0.1:{PBX_PORT}", "sip_domains": ["pbx.test"]}],
                        "services": {"sip": {"mode": "udp", "udp_port": 5060, "rate_limit": 0},
                                     "provisioning": {"mode": "off"}}})
    view = SipService.view(cfg)
    svc = SipService(ctx)
    svc.view_ = view
    svc.phone_udp, svc.back_udp = FakeUdp(5060), FakeUdp(40000)  # type: ignore[assignment]
    svc.relay = svc._make_relay(view)  # type: ignore[arg-type]
    return svc


def _headers(data: bytes, name: str) -> list[str]:
    text = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return [ln.partition(":")[2].strip() for ln in text.split("\r\n")[1:] if ln.partition(":")[0].lower() == name]


def _last(data: bytes, name: str) -> str:
    """sipp's `[last_Name:]`: all values of that header on one line."""
    values = _headers(data, name.lower())
    return f"{name}: {', '.join(values)}" if values else ""


def _msg(start: str, lines: list[str], body: bytes = b"", ctype: bool = False) -> bytes:
    head = [start, *[ln for ln in lines if ln]]
    if ctype:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def record(svc: SipService, calls: int) -> list[tuple[bytes, Flow]]:
    """The datagrams of `calls` calls, in the order the relay receives them."""
    out: list[tuple[bytes, Flow]] = []
    phone_t, back_t = svc.phone_udp, svc.back_udp

    def deliver(data: bytes, src: Flow, t: FakeUdp) -> bytes:
        out.append((data, src))
        t.sent.clear()
        svc.on_data(data, src)
        assert len(t.sent) == 1, (data, t.sent)
        return t.sent[0][1]

    me = f"{PHONE.ip}:{PHONE.port}"
    for n in range(calls):
        cid, ftag = f"{n}-4242@127.0.0.1", f"4242SIPpTag00{n}"
        common = [f"From: sipp <sip:sipp@pbx.test>;tag={ftag}", "To: <sip:service@pbx.test>", f"Call-ID: {cid}"]
        contact = f"Contact: <sip:sipp@{me};transport=UDP>"
        inv = _msg("INVITE sip:service@pbx.test SIP/2.0",
                   [f"Via: SIP/2.0/UDP {me};branch=z9hG4bK-4242-{n}-0;rport", *common, "CSeq: 1 INVITE", contact,
                    "Max-Forwards: 70"], SDP, ctype=True)
        fwd = deliver(inv, PHONE, back_t)  # type: ignore[arg-type]
        base = [_last(fwd, "Via"), _last(fwd, "From")]
        to = _last(fwd, "To") + f";tag=4242SIPpTag01{n}"
        tail = [_last(fwd, "Call-ID"), _last(fwd, "CSeq")]
        rr = _last(fwd, "Record-Route")
        pbx_contact = f"Contact: <sip:127.0.0.1:{PBX_PORT};transport=UDP>"
        deliver(_msg("SIP/2.0 100 Trying", [*base, _last(fwd, "To"), *tail]), PBX, phone_t)  # type: ignore[arg-type]
        deliver(_msg("SIP/2.0 180 Ringing", [*base, to, *tail, rr, pbx_contact]), PBX, phone_t)  # type: ignore[arg-type]
        ok = deliver(_msg("SIP/2.0 200 OK", [*base, to, *tail, rr, pbx_contact], SDP, ctype=True),
                     PBX, phone_t)  # type: ignore[arg-type]
        routes = "Route: " + ", ".join(reversed(_headers(ok, "record-route")))
        next_url = _headers(ok, "contact")[0].strip("<>")
        peer = to.partition(":")[2].strip()
        for i, (meth, cseq) in enumerate((("ACK", "1 ACK"), ("BYE", "2 BYE"))):
            req = _msg(f"{meth} {next_url} SIP/2.0",
                       [f"Via: SIP/2.0/UDP {me};branch=z9hG4bK-4242-{n}-{i + 1};rport", common[0], f"To: {peer}",
                        common[2], f"CSeq: {cseq}", routes, contact, "Max-Forwards: 70"])
            fwd_req = deliver(req, PHONE, back_t)  # type: ignore[arg-type]
        deliver(_msg("SIP/2.0 200 OK", [_last(fwd_req, "Via"), _last(fwd_req, "From"), _last(fwd_req, "To"),
                                        _last(fwd_req, "Call-ID"), _last(fwd_req, "CSeq")]), PBX, phone_t)  # type: ignore[arg-type]
    return out


def _clear_caches() -> None:
    scan_mod._seen.clear()
    scan_mod._starts.clear()
    scan_mod._tag_general.cache_clear()
    valid_request_uri.cache_clear()


def replay(state_dir: Path, msgs: list[tuple[bytes, Flow]], handler: bool) -> float:
    """µs per message through a fresh service (handler) or its relay alone."""
    svc = make_service(state_dir)
    _clear_caches()
    assert svc.relay is not None
    now = time.monotonic()
    if handler:
        fn = svc.on_data
        t0 = time.perf_counter()
        for data, src in msgs:
            fn(data, src)
    else:
        receive = svc.relay.receive
        t0 = time.perf_counter()
        for data, src in msgs:
            receive(data, src, now)
    dt = time.perf_counter() - t0
    sent = len(svc.phone_udp.sent) + len(svc.back_udp.sent)  # type: ignore[union-attr]
    assert not handler or sent == len(msgs), (sent, len(msgs))
    return dt / len(msgs) * 1e6


async def main(calls: int, profile: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        msgs = record(make_service(Path(tmp)), calls)
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            replay(Path(tmp), msgs, True)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        relay_us, handler_us = [], []
        for _ in range(5):  # alternate: the machine drifts
            relay_us.append(replay(Path(tmp), msgs, False))
            handler_us.append(replay(Path(tmp), msgs, True))
        print(f"{calls} calls, {len(msgs)} messages; best of 5 (median)")
        print(f"relay.receive   {min(relay_us):6.1f} µs/msg ({sorted(relay_us)[2]:.1f})")
        print(f"service.on_data {min(handler_us):6.1f} µs/msg ({sorted(handler_us)[2]:.1f})")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    asyncio.run(main(int(args[0]) if args else 2000, "--profile" in sys.argv))
